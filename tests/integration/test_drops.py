"""skb drops on the real kernel: each lab scenario makes the kernel drop packets for a known
reason in a known pod, and the real profiler must charge them to that pod (by netns inode),
to the right CPU and kernel function, and nowhere else."""
from __future__ import annotations

import copy
import ctypes
from dataclasses import dataclass
from pathlib import Path

import pytest

from profiler.capture import Capture
from profiler.lab.scenario_drops import CpuBacklogScenario, RcvbufDropScenario, cpu_backlog_unavailable
from profiler.lab.scenarios import Scenario, ScenarioResult
from profiler.kernel.maps import possible_cpus
from profiler.lab.sysctl import read_sysctl
from profiler.kernel.stacks import STACK_COUNT, STACK_SAMPLER
from profiler.probes.drops import (
    COUNT, DROP_COUNT, DROP_KEY, FLOW_KEY, LISTEN_KEY, NETNS_KEY, RAW_TRACEPOINT, SLOT_KEY, STACK_KEY, DropProbe,
    hook_via,
)
from profiler.kernel.features import tracepoint_fields
from profiler.profile import ProfileOptions, run_profile
from profiler.snapshot import PodInterval
from profiler.sources.drops import DropSource

pytestmark = pytest.mark.usefixtures("bpf_ready", "lab_ready")

NOT_DROPS = ("NOT_SPECIFIED", "SKB_NOT_DROPPED_YET", "SKB_CONSUMED")


def expected_drops_via(from_sites: bool) -> str:
    """How the drop probe must say it attached here: typed (tp_btf) wherever this kernel's
    BTF has kfree_skb's prototype. A raw tracepoint there means the kernel refused the typed
    program, which must not pass unseen: the probe's method then carries the refusal."""
    from profiler.kernel.features import probe_kernel
    from profiler.kernel.loader import BpfLoader

    typed = RAW_TRACEPOINT in BpfLoader(probe_kernel()).layout.typed_tracepoint_ids
    return hook_via(RAW_TRACEPOINT, typed, from_sites)


@dataclass(frozen=True)
class DropRun:
    capture: Capture
    result: ScenarioResult
    inodes: dict[str, int]       # pod name → netns inode, taken while the pod existed
    ignored: dict[str, int]      # frees the probe saw and did not count

    def pod(self, name: str) -> PodInterval:
        inode = self.inodes[name]
        for pod in self.capture.pod_totals():
            if pod.netns == inode:
                return pod
        return PodInterval(name, inode)

    def summary(self, role: str) -> dict:
        return next(w.summary for w in self.result.workloads if w.role == role)


def softnet_dropped() -> dict[int, int]:
    """CPU → the `dropped` column of /proc/net/softnet_stat (backlog overflows it charged)."""
    dropped = {}
    for row, line in enumerate(Path("/proc/net/softnet_stat").read_text().splitlines()):
        columns = line.split()
        if columns:
            # Column 13 is the CPU id since 5.10; rows of offline CPUs are skipped.
            cpu = int(columns[12], 16) if len(columns) > 12 else row
            dropped[cpu] = int(columns[1], 16)
    return dropped


def capture_scenario(scenario: Scenario, run_s: float, probe: DropProbe | None = None) -> DropRun:
    from tests.conftest import missing_for_bpf, missing_for_lab, skip_or_fail

    reason = missing_for_bpf() or missing_for_lab()
    if reason:
        skip_or_fail(reason)
    with scenario:
        results: list[ScenarioResult] = []
        source = DropSource(probe)

        def whole_scenario() -> None:
            # The pods' own counters are read at start() and after wait(): running the whole
            # scenario inside the capture makes the capture's window cover theirs.
            scenario.start(run_s)
            results.append(scenario.wait())

        capture = run_profile(ProfileOptions(duration_s=0.5, interval_s=0.5), on_attached=whole_scenario,
                              log=lambda msg: None, sources=[source])
        inodes = {name: pod.netns_inode for name, pod in scenario.lab.pods.items()}
    run = DropRun(capture, results[0], inodes, dict(source.ignored_totals))
    print(f"\n{scenario.name}: " + "; ".join(
        f"{name} {dict(run.pod(name).drops)} rcvqueue_full={run.pod(name).rcvqueue_full}" for name in inodes)
        + f"; cpus {[(c.cpu, dict(c.drops)) for c in capture.cpu_totals()]}; ignored {run.ignored}")
    return run


@pytest.fixture(scope="module")
def rcvbuf_run() -> DropRun:
    return capture_scenario(RcvbufDropScenario(), run_s=1.0)


@pytest.fixture(scope="module")
def backlog_run() -> tuple[DropRun, int, dict[int, int], dict[int, int]]:
    reason = cpu_backlog_unavailable()
    if reason:
        pytest.skip(reason)
    scenario = CpuBacklogScenario()
    max_backlog_before = read_sysctl("net.core.netdev_max_backlog")
    softnet_before = softnet_dropped()
    run = capture_scenario(scenario, run_s=2.0)
    softnet_after = softnet_dropped()
    assert read_sysctl("net.core.netdev_max_backlog") == max_backlog_before, "sysctl not restored"
    return run, scenario.sender_cpu, softnet_before, softnet_after


def test_rcvbuf_drops_equal_the_receivers_own_counter(rcvbuf_run):
    receiver = rcvbuf_run.pod("receiver")
    kernel = rcvbuf_run.result.counter_by_pod("Udp.RcvbufErrors")["receiver"]
    # design.md §8: 1000 datagrams into a 4 KiB buffer that is never read → 991 every run.
    assert kernel > 900
    assert receiver.drops.get("SOCKET_RCVBUFF", 0) == kernel
    assert rcvbuf_run.summary("udp-sink")["socket_drops"] == kernel


def test_sender_has_no_receive_buffer_drops(rcvbuf_run):
    sender = rcvbuf_run.pod("sender")
    assert sender.drops.get("SOCKET_RCVBUFF", 0) == 0, dict(sender.drops)
    assert sender.rcvqueue_full == 0


def test_rcvqueue_full_is_charged_to_the_ping_sockets_pod(rcvbuf_run):
    # UDP checks its buffer in its own code (no sock_rcvqueue_full); the ping socket goes
    # through __sock_queue_rcv_skb, which fires it once per packet it refuses.
    pinger, receiver = rcvbuf_run.pod("pinger"), rcvbuf_run.pod("receiver")
    refused = rcvbuf_run.summary("ping-flood")["socket_drops"]
    assert refused > 200
    assert pinger.rcvqueue_full == refused
    # Before the fix in later kernels, icmp_rcv (6.1) frees the echo reply itself with the
    # reason ping_rcv returned after the socket refused, and freed, its clone: the kernel
    # reports two SOCKET_RCVBUFF drops per refusal, the second at icmp_rcv. Both are real
    # kfree_skb events; the socket's refusals are the rest, exactly.
    at_icmp_rcv = sum(site.count for site in rcvbuf_run.capture.drop_site_totals()
                      if site.reason == "SOCKET_RCVBUFF" and site.symbol.startswith("icmp_rcv"))
    assert at_icmp_rcv in (0, refused), at_icmp_rcv
    assert pinger.drops.get("SOCKET_RCVBUFF", 0) - at_icmp_rcv == refused
    assert receiver.rcvqueue_full == 0


def test_top_receive_buffer_drop_site_is_a_kernel_function(rcvbuf_run):
    sites = [s for s in rcvbuf_run.capture.drop_site_totals() if s.reason == "SOCKET_RCVBUFF"]
    assert sites, rcvbuf_run.capture.drop_site_totals()
    top = sites[0]
    assert top.count >= rcvbuf_run.result.counter_by_pod("Udp.RcvbufErrors")["receiver"]
    assert "udp" in top.symbol or "sock_queue_rcv" in top.symbol, top.symbol
    assert not top.symbol.startswith("0x")


def test_not_specified_is_never_a_drop(rcvbuf_run):
    capture = rcvbuf_run.capture
    for pod in capture.pod_totals():
        assert not set(pod.drops) & set(NOT_DROPS), (pod.pod, dict(pod.drops))
    for cpu in capture.cpu_totals():
        assert not set(cpu.drops) & set(NOT_DROPS), (cpu.cpu, dict(cpu.drops))
    assert all(site.reason not in NOT_DROPS for site in capture.drop_site_totals())
    assert set(rcvbuf_run.ignored) == {"not_specified", "not_a_drop"}


def test_profile_json_carries_the_drops(rcvbuf_run):
    doc = rcvbuf_run.capture.to_json()
    probes = {p["name"]: p for p in doc["probes"]}
    # Before 5.17 the reasons come from call sites (profiler/probes/drop_sites.py), and the
    # probe table says so.
    from_sites = "reason" not in tracepoint_fields("/sys/kernel/tracing", "skb/kfree_skb")
    assert probes["skb_drops"]["attached"], probes["skb_drops"]
    assert probes["skb_drops"]["via"] == expected_drops_via(from_sites)
    assert probes["rcvqueue_full"]["attached"], probes["rcvqueue_full"]
    pods = {p["netns"]: p for p in doc["pods"]}
    receiver = pods[rcvbuf_run.inodes["receiver"]]
    assert receiver["drops"]["SOCKET_RCVBUFF"] == rcvbuf_run.result.counter_by_pod("Udp.RcvbufErrors")["receiver"]
    assert pods[rcvbuf_run.inodes["pinger"]]["rcvqueue_full"] > 0
    assert any(site["reason"] == "SOCKET_RCVBUFF" for site in doc["drop_sites"])
    assert not doc["lost_events"]


def test_cpu_backlog_drops_are_charged_to_the_receiving_pod(backlog_run):
    run, _, _, _ = backlog_run
    receiver = run.pod("receiver").drops.get("CPU_BACKLOG", 0)
    # design.md §8 measured 1.7k-4.9k for 3 s; the count varies, so only its shape is asserted.
    assert receiver > 0, {name: dict(run.pod(name).drops) for name in run.inodes}
    # The backlog is tiny for the whole node, and a quiet pod still sends the odd packet of its
    # own (most likely an ARP answer; not shown): a CI run once charged it 1 drop against the
    # receiver's 2,387. What is asserted is that the receiver's drops are not charged to it.
    assert run.pod("quiet").drops.get("CPU_BACKLOG", 0) <= 3
    # The sender only gets the odd ARP reply or ICMP error through a full backlog.
    assert run.pod("sender").drops.get("CPU_BACKLOG", 0) * 10 <= receiver


def test_cpu_backlog_drops_are_seen_on_the_enqueuing_cpu(backlog_run):
    run, sender_cpu, softnet_before, softnet_after = backlog_run
    receiver = run.pod("receiver").drops.get("CPU_BACKLOG", 0)
    cpus = {cpu.cpu: cpu.drops.get("CPU_BACKLOG", 0) for cpu in run.capture.cpu_totals()}
    # The sender's CPU runs the whole path up to the enqueue onto the other CPU's backlog,
    # so the tracepoint fires there for nearly all of them (the odd packet toward the
    # receiver starts on the other CPU; other labs on the node may add to either total).
    assert cpus.get(sender_cpu, 0) >= 0.9 * receiver, cpus
    # softnet_stat charges the CPU whose backlog was full instead.
    backlog_cpu = CpuBacklogScenario().backlog_cpu
    assert softnet_after[backlog_cpu] - softnet_before[backlog_cpu] >= receiver


def test_numpy_layouts_match_the_loaded_programs_structs(loader):
    probe = DropProbe()
    status = probe.attach(loader)
    try:
        assert status.attached, status.error
        bpf = probe._bpf
        expected = {
            # The count and its key's stack sampling state (bpf/stacks.h), one per CPU.
            b"drops_by_netns_reason_site": (DROP_KEY, DROP_COUNT),
            b"listen_overflows_by_port": (LISTEN_KEY, COUNT),
            b"rcvqueue_full_by_netns": (NETNS_KEY, COUNT),
            b"drops_uncounted": (SLOT_KEY, COUNT),
            b"drops_by_flow": (FLOW_KEY, COUNT),
            b"drops_by_stack": (STACK_KEY, STACK_COUNT),
            b"drop_stack_sampler": (SLOT_KEY, STACK_SAMPLER),
            b"drop_stacks_lost": (SLOT_KEY, COUNT),
        }
        for name, (key, value) in expected.items():
            table = bpf[name]
            one_cpu_leaf = getattr(table, "sLeaf", table.Leaf)
            assert ctypes.sizeof(table.Key) == key.itemsize, name
            assert ctypes.sizeof(one_cpu_leaf) == value.itemsize, name
        counts = probe.read()
        assert counts.per_cpu_reason.ndim == 2 and counts.per_cpu_reason.shape[1] == possible_cpus()
    finally:
        probe.detach()
    probe.detach()  # twice is safe


def test_a_refused_typed_program_falls_back_to_the_raw_tracepoint(loader):
    """The kernel's verifier refuses the typed program (here: loaded against a prototype with
    two arguments, where the program reads four); the probe says why in its method, and the
    raw-tracepoint program it falls back to still charges every drop to its pod."""
    from dataclasses import replace

    ids = loader.layout.typed_tracepoint_ids
    if RAW_TRACEPOINT not in ids or "sock_rcvqueue_full" not in ids:
        pytest.skip("this kernel's BTF has no tp_btf prototypes for kfree_skb and sock_rcvqueue_full")
    wrong = replace(loader.layout, typed_tracepoint_ids={**ids, RAW_TRACEPOINT: ids["sock_rcvqueue_full"]})
    doctored = copy.copy(loader)
    doctored.layout = wrong
    probe = DropProbe(stacks=False)
    status = probe.attach(doctored)
    try:
        assert status.attached, status
        assert status.via.startswith("raw_tracepoint:kfree_skb (the kernel refused tp_btf:kfree_skb (EACCES"), status
        assert probe.rcvqueue_status.via == "raw_tracepoint:sock_rcvqueue_full", probe.rcvqueue_status
        with RcvbufDropScenario() as scenario:
            receiver = scenario.lab.pods["receiver"].netns_inode
            scenario.start(1.0)
            result = scenario.wait()
            counts = probe.read()
    finally:
        probe.detach()
    kernel = result.counter_by_pod("Udp.RcvbufErrors")["receiver"]
    rcvbuf = next(value for value, name in probe.reason_names.items() if name == "SOCKET_RCVBUFF")
    counted = sum(int(c) for key, c in zip(counts.netns_reasons, counts.per_netns_reason["count"])
                  if int(key["netns_inode"]) == receiver and int(key["reason"]) == rcvbuf)
    assert kernel > 900 and counted == kernel, (counted, kernel)
