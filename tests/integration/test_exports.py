"""Exports of real lab captures: the kernel stacks of the real drop and retransmit paths,
written by `write_all` / `netprof profile --output`, read back by independent readers
(tests/export_readers.py), with every count checked against the capture and the pods' own
kernel counters. Pods are found by netns inode, never by name."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from profiler.capture import Capture
from profiler.exports import write_all
from profiler.lab.scenario_drops import RcvbufDropScenario
from profiler.lab.scenario_listen import SERVER_PORT, ListenOverflowDropScenario
from profiler.lab.scenarios import RetransmitScenario, Scenario, ScenarioResult, lab_time_scale
from profiler.pod_listing import default_pod_directory
from profiler.profile import ProfileOptions, run_profile
from profiler.sources.drops import DropSource
from profiler.sources.listen import ListenSource
from profiler.sources.retransmits import RetransmitSource
from profiler.sources.softirq import SoftirqSource
from tests.export_readers import of_kind, parse_folded, read_csv, read_prometheus, read_speedscope, sample_value

pytestmark = pytest.mark.usefixtures("bpf_ready", "lab_ready")

REPO = Path(__file__).resolve().parents[2]
# The function in which skb:kfree_skb fires, the innermost frame of every drop stack:
# sk_skb_reason_drop since 6.11, kfree_skb_reason before (Debian's 6.1).
# Where skb:kfree_skb fires, newest first: 6.11+, 5.17+, and kfree_skb itself before (5.10).
KFREE_SKB_FUNCTIONS = ("sk_skb_reason_drop", "kfree_skb_reason", "kfree_skb")


def kfree_skb_frame() -> str:
    from profiler.probes.kprobe_attach import kernel_has_symbol

    return next((name for name in KFREE_SKB_FUNCTIONS if kernel_has_symbol(name)), KFREE_SKB_FUNCTIONS[0])


FILES = ("capture.json", "stacks.folded", "speedscope.json", "flamegraph.svg", "histograms.json", "histograms.csv",
         "metrics.prom")


@dataclass(frozen=True)
class ExportRun:
    capture: Capture
    result: ScenarioResult
    inodes: dict[str, int]        # pod name → netns inode, taken while the pod existed
    out: Path                     # the directory write_all filled

    @property
    def doc(self) -> dict:
        return json.loads((self.out / "capture.json").read_text())

    def label(self, name: str) -> str:
        """The label the capture gave the pod with this pod's netns inode."""
        return next(p["pod"] for p in self.doc["pods"] if p["netns"] == self.inodes[name])

    @property
    def stacks_lost(self) -> dict[str, int]:
        return stacks_lost(self.doc)

    def assert_stacked(self, stacked: int, events: int) -> None:
        assert_stacked(self.doc, stacked, events)

    def folded(self) -> Counter[tuple[str, ...]]:
        return parse_folded((self.out / "stacks.folded").read_text())

    def stacks_of(self, name: str, reason: str) -> Counter[tuple[str, ...]]:
        """This pod's folded stacks of one reason, frames without the pod and reason."""
        label = self.label(name)
        return Counter({frames[2:]: n for frames, n in self.folded().items() if frames[:2] == (label, reason)})


def stacks_lost(doc: dict) -> dict[str, int]:
    """Events without a stack: a full map (lost_events), or still pending at the end (each
    sampling key's events since its last walk, bpf/stacks.h)."""
    events = {**doc["lost_events"], **doc["ignored_events"]}
    lost = {k: v for k, v in events.items() if "stacks_" in k and v}
    pending = (doc.get("stack_sampling") or {}).get("pending", 0)
    return {**lost, **({"pending": pending} if pending else {})}


def assert_stacked(doc: dict, stacked: int, events: int) -> None:
    """Stacks are sampled and weighted (bpf/stacks.h): the events they stand for are every
    event, but for those the capture says have no stack (a full map, or still pending at the
    end). The machine may be shared: other workloads' events are in those too."""
    if not stacks_lost(doc):
        assert stacked == events, (stacked, events)
    else:
        assert 0 < stacked <= events, (stacked, events, stacks_lost(doc))
        assert events - stacked <= sum(stacks_lost(doc).values()), (stacked, events, stacks_lost(doc))


def capture_and_export(scenario: Scenario, run_s: float, out: Path, listen: bool = False) -> ExportRun:
    from tests.conftest import missing_for_bpf, missing_for_lab, skip_or_fail

    reason = missing_for_bpf() or missing_for_lab()
    if reason:
        skip_or_fail(reason)
    with scenario:
        sources = [RetransmitSource(), DropSource(), SoftirqSource()]
        results: list[ScenarioResult] = []
        if listen:
            # The listener sampler must run while the queue is full: the scenario runs beside
            # the sampling loop, not inside on_attached.
            sources.append(ListenSource(default_pod_directory()))
            capture = run_profile(ProfileOptions(duration_s=run_s + 1.0, interval_s=0.5),
                                  on_attached=lambda: scenario.start(run_s), log=lambda msg: None, sources=sources)
            results.append(scenario.wait())
        else:
            def whole_scenario() -> None:
                scenario.start(run_s)
                results.append(scenario.wait())

            capture = run_profile(ProfileOptions(duration_s=0.5, interval_s=0.5), on_attached=whole_scenario,
                                  log=lambda msg: None, sources=sources)
        inodes = {name: pod.netns_inode for name, pod in scenario.lab.pods.items()}
    written = write_all(capture.to_json(), out)
    assert [p.name for p in written] == list(FILES)
    run = ExportRun(capture, results[0], inodes, out)
    totals: Counter[str] = Counter()
    for frames, count in parse_folded((out / "stacks.folded").read_text()).items():
        totals[";".join(frames[:2])] += count
    print(f"\n{scenario.name}: stacks {dict(totals)}; without stacks {stacks_lost(capture.to_json())}")
    return run


@pytest.fixture(scope="module")
def rcvbuf_run(tmp_path_factory) -> ExportRun:
    return capture_and_export(RcvbufDropScenario(pings=0), 1.0, tmp_path_factory.mktemp("rcvbuf"))


@pytest.fixture(scope="module")
def listen_run(tmp_path_factory) -> ExportRun:
    return capture_and_export(ListenOverflowDropScenario(backlog=64, burst=60), 3.0,
                              tmp_path_factory.mktemp("listen"), listen=True)


@pytest.fixture(scope="module")
def retransmit_run(tmp_path_factory) -> ExportRun:
    return capture_and_export(RetransmitScenario(), 3.0, tmp_path_factory.mktemp("retransmits"))


def assert_stacks_add_up(run: ExportRun) -> None:
    """Folded stacks per (pod, reason) = the capture's drops and retransmits of that pod,
    exactly (both are counted by the same BPF program at the same event, each walk weighted
    by the events it stands for), or at most that when the capture reports events without
    a stack — and then, over all pods, short by exactly those."""
    doc = run.doc
    folded = run.folded()
    by_pod_reason: Counter[tuple[str, str]] = Counter()
    for frames, count in folded.items():
        by_pod_reason[frames[:2]] += count
    expected: Counter[tuple[str, str]] = Counter()
    for pod in doc["pods"]:
        for reason, count in pod["drops"].items():
            expected[(pod["pod"], reason)] += count
        if pod["retransmits"]:
            expected[(pod["pod"], "TCP_RETRANSMIT")] += pod["retransmits"]
    if run.stacks_lost:
        assert all(0 < n <= expected[key] for key, n in by_pod_reason.items()), (by_pod_reason, expected)
        assert sum(expected.values()) - sum(by_pod_reason.values()) == sum(run.stacks_lost.values()), (
            by_pod_reason, expected, run.stacks_lost)
    else:
        assert by_pod_reason == expected
    profiles = read_speedscope((run.out / "speedscope.json").read_text())
    expected_names = set()
    for kind in ("drops", "retransmits"):
        stacks = of_kind(folded, kind)
        if not stacks:
            continue
        assert profiles[f"{kind}: all pods"] == stacks
        expected_names |= {f"{kind}: all pods"} | {f"{kind}: {frames[0]}" for frames in stacks}
        for pod in {frames[0] for frames in stacks}:
            assert profiles[f"{kind}: {pod}"] == Counter({frames[1:]: n for frames, n in stacks.items()
                                                         if frames[0] == pod})
    assert set(profiles) == expected_names


def test_receive_buffer_drop_stacks_show_the_udp_receive_path(rcvbuf_run):
    kernel = rcvbuf_run.result.counter_by_pod("Udp.RcvbufErrors")["receiver"]
    stacks = rcvbuf_run.stacks_of("receiver", "SOCKET_RCVBUFF")
    assert kernel > 900
    rcvbuf_run.assert_stacked(sum(stacks.values()), kernel)
    kfree = kfree_skb_frame()
    for frames in stacks:
        # kfree is where kfree_skb fires; its caller is the function that dropped: the UDP
        # receive path's, __udp_queue_rcv_skb where the compiler kept it apart (6.1).
        assert frames[-1] == kfree, frames
        # 5.10's kfree_skb fires in a clone of itself, named as the function: the caller is
        # the first other name.
        caller = next(f for f in reversed(frames) if f != kfree)
        assert caller in ("udp_queue_rcv_one_skb", "__udp_queue_rcv_skb"), frames
        assert "net_rx_action" in frames and "udp_sendmsg" in frames, frames
    assert not rcvbuf_run.stacks_of("sender", "SOCKET_RCVBUFF")
    assert_stacks_add_up(rcvbuf_run)


def test_listen_overflow_drop_stacks_show_where_tcp_drops_the_final_ack(listen_run, loader):
    if "TCP_LISTEN_OVERFLOW" not in loader.layout.drop_reasons.values():
        # 6.1 frees the final ACK with NOT_SPECIFIED: no drop, no stack; the overflows are
        # counted by the listen_syn_path kprobe (test_listen.py).
        pytest.skip("this kernel has no TCP_LISTEN_OVERFLOW drop reason")
    kernel = listen_run.result.counter_by_pod("TcpExt.ListenOverflows")["server"]
    stacks = listen_run.stacks_of("server", "TCP_LISTEN_OVERFLOW")
    assert kernel >= 30
    listen_run.assert_stacked(sum(stacks.values()), kernel)
    for frames in stacks:
        # tcp_check_req → tcp_v4_syn_recv_sock fails on the full accept queue and returns to
        # tcp_v4_rcv, which frees the ACK with TCP_LISTEN_OVERFLOW (both callees are inlined
        # or returned from by then: the dropping frame on 6.18 is tcp_v4_rcv).
        assert frames[-2:] == ("tcp_v4_rcv", kfree_skb_frame()), frames
        assert "ip_local_deliver_finish" in frames, frames
    for name in ("client", "calm"):
        assert not listen_run.stacks_of(name, "TCP_LISTEN_OVERFLOW")
    assert_stacks_add_up(listen_run)


def test_listen_queue_depth_histogram_of_the_full_listener(listen_run):
    document = json.loads((listen_run.out / "histograms.json").read_text())
    server = listen_run.label("server")
    (depth,) = [h for h in document["histograms"] if h["name"] == "listen_accept_queue_depth"
                and h["labels"]["netns"] == listen_run.inodes["server"] and h["labels"]["port"] == SERVER_PORT]
    assert depth["labels"]["pod"] == server
    # The queue held 64 (one short of full) or 65 (full) for most of the run: [64, 128).
    full_bucket = next(b for b in depth["buckets"] if b["lo"] == 64)
    assert full_bucket["count"] >= depth["count"] / 2 and 64 <= depth["percentiles"]["p50"] <= 66, depth
    assert not [h for h in document["histograms"] if h["name"] == "listen_accept_queue_depth"
                and h["labels"]["netns"] == listen_run.inodes["calm"] and h["percentiles"]["p50"] >= 1]


def test_retransmit_stacks_show_the_retransmit_paths(retransmit_run):
    lossy = next(p for p in retransmit_run.doc["pods"] if p["netns"] == retransmit_run.inodes["lossy"])
    stacks = retransmit_run.stacks_of("lossy", "TCP_RETRANSMIT")
    assert lossy["retransmits"] >= 30
    retransmit_run.assert_stacked(sum(stacks.values()), lossy["retransmits"])
    for frames in stacks:
        # Every retransmit ends in __tcp_retransmit_skb; it is entered from tcp_retransmit_skb
        # (fast retransmit, RTO) or straight from tcp_send_loss_probe (a tail loss probe,
        # fired from a timer — often on another CPU's stack).
        assert frames[-1] == "__tcp_retransmit_skb", frames
        # 5.10 fires it in a compiler clone (`__tcp_retransmit_skb.part.0`) that the
        # symbolizer names as the function: the caller is the first other name.
        caller = next(f for f in reversed(frames) if f != "__tcp_retransmit_skb")
        assert caller in ("tcp_retransmit_skb", "tcp_send_loss_probe"), frames
    callers = {f for frames in stacks for f in frames}
    # Fast retransmit from ACK processing or the RTO timer: one of them must be there.
    assert any(f.startswith("tcp_xmit_retransmit_queue") for f in callers) or "tcp_retransmit_timer" in callers
    # A loss-free pod's own tail loss probes have stacks too (as test_retransmits allows them):
    # at most what was counted for that pod.
    pods = {p["netns"]: p for p in retransmit_run.doc["pods"]}
    for name in ("steady1", "steady2"):
        own = pods.get(retransmit_run.inodes[name], {}).get("retransmits", 0)
        assert sum(retransmit_run.stacks_of(name, "TCP_RETRANSMIT").values()) <= max(lossy["retransmits"] // 10, own)
    assert_stacks_add_up(retransmit_run)


def test_histograms_agree_with_the_captures_cpus(retransmit_run):
    document = json.loads((retransmit_run.out / "histograms.json").read_text())
    cpus = {c["cpu"]: c for c in retransmit_run.doc["cpus"]}
    latency = [h for h in document["histograms"] if h["name"] == "softirq_latency_ns"]
    assert latency, "NET_RX/NET_TX ran during a TCP transfer"
    for histogram in latency:
        stats = cpus[histogram["labels"]["cpu"]]["softirq"][histogram["labels"]["vector"]]
        assert [b["count"] for b in histogram["buckets"]] == stats["latency_log2_ns"]
        # The run counter and the histogram are two maps read one after the other while
        # softirqs run: the last interval's reads may differ by the runs in between.
        assert abs(histogram["count"] - stats["count"]) <= max(8, stats["count"] // 100)
        p50, p90, p99 = (histogram["percentiles"][k] for k in ("p50", "p90", "p99"))
        assert 0 <= p50 <= p90 <= p99 < 2 ** 31
    rows = read_csv((retransmit_run.out / "histograms.csv").read_text())
    per_histogram: Counter[tuple[str, str, str]] = Counter()
    for row in rows:
        per_histogram[(row["histogram"], row["cpu"], row["vector"])] += int(row["count"])
    for histogram in document["histograms"]:
        labels = histogram["labels"]
        if "cpu" in labels:
            assert per_histogram[(histogram["name"], str(labels["cpu"]), labels["vector"])] == histogram["count"]


def test_metrics_file_agrees_with_the_capture(rcvbuf_run):
    families = read_prometheus((rcvbuf_run.out / "metrics.prom").read_text())
    receiver = next(p for p in rcvbuf_run.doc["pods"] if p["netns"] == rcvbuf_run.inodes["receiver"])
    assert sample_value(families, "netprof_drops_total", netns=str(rcvbuf_run.inodes["receiver"]),
                        reason="SOCKET_RCVBUFF") == receiver["drops"]["SOCKET_RCVBUFF"]
    assert sample_value(families, "netprof_probe_attached", probe="drop_stacks") == 1
    assert sample_value(families, "netprof_probe_attached", probe="retransmit_stacks") == 1


def test_profile_output_writes_every_file_of_a_real_capture(tmp_path):
    """`netprof profile --output DIR` end to end: the real CLI with every source, while the
    receive-buffer scenario runs beside it."""
    out = tmp_path / "exports"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    # A slow machine (tests/kernels' guests) takes seconds to make the lab and start its
    # workloads: the lab is up before the capture starts, and the capture is as much longer.
    scale = lab_time_scale()
    with RcvbufDropScenario(pings=0) as scenario:
        proc = subprocess.Popen([sys.executable, "-m", "profiler.cli", "profile", "--duration", f"{4 * scale:g}",
                                 "--interval", "0.5", "--output", str(out)], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 60 * scale
            for line in proc.stderr:
                if line.startswith("capturing for") or time.monotonic() > deadline:
                    break
            scenario.start(1.0)
            result = scenario.wait()
            receiver_inode = scenario.lab.pods["receiver"].netns_inode
            stdout, stderr = proc.communicate(timeout=60 * scale)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert proc.returncode == 0, stderr[-2000:]
    assert [line for line in stdout.splitlines() if line.startswith("wrote ")] == [
        f"wrote {out / name}" for name in FILES]
    doc = json.loads((out / "capture.json").read_text())
    label = next(p["pod"] for p in doc["pods"] if p["netns"] == receiver_inode)
    stacks = parse_folded((out / "stacks.folded").read_text())
    rcvbuf = {frames: n for frames, n in stacks.items() if frames[:2] == (label, "SOCKET_RCVBUFF")}
    kernel = result.counter_by_pod("Udp.RcvbufErrors")["receiver"]
    assert kernel > 900
    assert_stacked(doc, sum(rcvbuf.values()), kernel)
    assert all("udp_queue_rcv_one_skb" in frames for frames in rcvbuf)
    assert read_speedscope((out / "speedscope.json").read_text())["drops: all pods"] == of_kind(stacks, "drops")
    assert json.loads((out / "histograms.json").read_text())["histograms"]
    assert read_csv((out / "histograms.csv").read_text())
    assert read_prometheus((out / "metrics.prom").read_text())
    assert not [name for name in os.listdir(out) if name not in FILES], "no temporary files left"


def test_probes_load_without_stacks_when_not_asked(loader):
    """The stack maps are optional parts of both programs: without them the counts are the
    same programs' and nothing reports stacks."""
    from profiler.probes.drops import DropProbe
    from profiler.probes.retransmits import RetransmitProbe

    for probe in (DropProbe(stacks=False), RetransmitProbe(stacks=False)):
        try:
            assert probe.attach(loader).attached
            assert probe.stacks_status is None
            counts = probe.read()
            assert len(counts.stacks.keys) == 0 and not any(counts.stacks_lost.values())
            assert counts.sampling is None
        finally:
            probe.detach()
