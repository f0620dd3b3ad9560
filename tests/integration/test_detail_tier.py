"""The detail tier on the real kernel: a session in `auto` starts quiet (softirq and NAPI
programs parked, stack walks paused) while the always-on drop counts keep counting; a lab
scenario's drops switch it to full; only then do the detail programs' counts move, and the
switch is in the capture. Behaviour, not timing: every assertion is about what was counted
in which tier, none about how long anything took."""
from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from profiler.detail_tier import TierSettings, TierThresholds, trouble_figures
from profiler.lab.scenario_drops import RcvbufDropScenario
from profiler.lab.workload_drops import SO_RCVBUFFORCE
from profiler.live import LiveSession
from profiler.snapshot import FULL_TIER, QUIET_TIER, Snapshot

pytestmark = pytest.mark.usefixtures("bpf_ready", "lab_ready")

INTERVAL_S = 0.5
DROPS_PER_S = 10.0  # the session's threshold for trouble (see `tiered`)
# The other figures' thresholds, out of reach: this module is about drops switching the tier
# (each figure's rule has its unit test), and a guest's vCPU descheduled mid-softirq counts
# time_squeeze that no test traffic made.
UNREACHABLE_PER_S = 1e9
# The loopback sink's buffer: a reader stalled for seconds (the sampler holding the GIL in a
# guest under emulation) must not overflow it, or its drops would be the trouble.
SINK_RCVBUF = 32 << 20
WALK_ATTEMPTS = 6


class LoopbackTraffic:
    """UDP datagrams over the host's loopback to a socket that reads them all: NET_RX
    softirqs and backlog NAPI polls on this node all along, and no drop (no trouble)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self.sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sink.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, SINK_RCVBUF)  # root: past rmem_max
        self.sink.bind(("127.0.0.1", 0))
        self.sink.settimeout(0.05)
        self.received = 0
        self._threads = [threading.Thread(target=self._send, daemon=True),
                         threading.Thread(target=self._read, daemon=True)]

    def _send(self) -> None:
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        address = self.sink.getsockname()
        while not self._stop.is_set():
            for _ in range(20):
                sender.sendto(b"x" * 64, address)
            self._stop.wait(0.01)
        sender.close()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                self.sink.recv(2048)
                self.received += 1
            except TimeoutError:
                continue

    def __enter__(self) -> LoopbackTraffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join()
        self.sink.close()


def rcvbuf_drops_on_loopback(datagrams: int = 300) -> None:
    """SOCKET_RCVBUFF drops in the host netns: a 4 KiB socket that is never read."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as full, \
            socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        full.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        full.bind(("127.0.0.1", 0))
        for _ in range(datagrams):
            sender.sendto(b"y" * 100, full.getsockname())


def net_rx_runs(snapshot: Snapshot) -> int:
    return sum(cpu.softirq["NET_RX"].count for cpu in snapshot.cpus if "NET_RX" in cpu.softirq)


def napi_polls(snapshot: Snapshot) -> int:
    return sum(device.polls for cpu in snapshot.cpus for device in cpu.napi)


def drops(snapshot: Snapshot, reason: str = "SOCKET_RCVBUFF") -> int:
    return sum(pod.drops.get(reason, 0) for pod in snapshot.pods)


def sample_after(session: LiveSession, seconds: float = INTERVAL_S) -> Snapshot:
    time.sleep(seconds)
    return session.sample()


@pytest.fixture(scope="module")
def tiered() -> Iterator[dict]:
    from tests.conftest import missing_for_bpf, missing_for_lab, skip_or_fail

    reason = missing_for_bpf() or missing_for_lab()
    if reason:
        skip_or_fail(reason)
    logged: list[str] = []
    # The scenario's ~1000 drops come in one interval as long as the machine makes it: 2-3 s
    # on the host, 30 s and more in a 5.10 guest under emulation, where the default 50
    # drops/s was not reached. A threshold of 10/s holds anywhere this suite runs.
    thresholds = TierThresholds(drops_per_s=DROPS_PER_S, retransmits_per_s=UNREACHABLE_PER_S,
                                softnet_dropped_per_s=UNREACHABLE_PER_S, time_squeeze_per_s=UNREACHABLE_PER_S)
    session = LiveSession(tier=TierSettings(mode="auto", thresholds=thresholds))
    with session, LoopbackTraffic() as traffic:
        session.start(logged.append)
        quiet = [sample_after(session) for _ in range(3)]
        with RcvbufDropScenario() as scenario:
            receiver = scenario.lab.pods["receiver"].netns_inode
            quiet.append(session.sample())   # the lab coming up: still quiet, no trouble
            scenario.start(2.0)
            result = scenario.wait()
            trouble = session.sample()       # the scenario's drops, counted while quiet
        full = [sample_after(session) for _ in range(2)]
        # Walks resume, but on the CPU-time budget: a walk measured long (a vCPU descheduled
        # mid-walk beside another guest) leaves a CPU in debt, and forky's guest took 292
        # drops with every check refused for budget. Drops until one is walked, bounded.
        for _ in range(WALK_ATTEMPTS):
            rcvbuf_drops_on_loopback()
            full.append(sample_after(session))
            if full[-1].stack_sampling.get("drop_walks", 0):
                break
        capture = session.capture(with_node=False)
        yield {"quiet": quiet, "trouble": trouble, "full": full, "capture": capture.to_json(),
               "receiver": receiver, "result": result, "logged": logged, "traffic": traffic}


def what_went_on(snapshot: Snapshot) -> dict:
    """An interval's tier, its switch and the figures the policy judged, for a failure's message."""
    return {"tier": snapshot.tier, "switch": snapshot.tier_switch, "figures": trouble_figures(snapshot),
            "drops": {pod.netns: dict(pod.drops) for pod in snapshot.pods if pod.drops}}


def test_quiet_intervals_run_no_detail_program_while_traffic_flows(tiered):
    assert tiered["traffic"].received > 0
    for snapshot in tiered["quiet"]:
        assert snapshot.tier == QUIET_TIER and snapshot.tier_switch is None, what_went_on(snapshot)
        assert net_rx_runs(snapshot) == 0 and napi_polls(snapshot) == 0
        assert snapshot.stacks == ()


def test_the_scenario_drops_are_counted_in_the_quiet_tier_without_a_stack_and_switch_it_to_full(tiered):
    trouble = tiered["trouble"]
    receiver = tiered["receiver"]
    kernel_count = tiered["result"].counter_by_pod("Udp.RcvbufErrors")["receiver"]
    counted = sum(pod.drops.get("SOCKET_RCVBUFF", 0) for pod in trouble.pods if pod.netns == receiver)
    assert kernel_count > 900 and counted == kernel_count   # the always-on counter is exact
    assert trouble.tier == QUIET_TIER, [what_went_on(snapshot) for snapshot in (*tiered["quiet"], trouble)]
    # Stack walks were paused: nearly a thousand drops, not one walk, no stack.
    assert trouble.stacks == () and trouble.stack_sampling.get("drop_walks", 0) == 0
    assert net_rx_runs(trouble) == 0 and napi_polls(trouble) == 0
    switch = trouble.tier_switch
    assert switch is not None and switch.to == FULL_TIER and switch.problems == ()
    assert switch.why.startswith("trouble: drops ") and switch.figures["drops_per_s"] >= DROPS_PER_S
    assert any(line.startswith("detail tier → full: trouble: drops") for line in tiered["logged"])


def test_after_the_switch_the_detail_programs_count(tiered):
    full = tiered["full"]
    assert all(snapshot.tier == FULL_TIER and snapshot.tier_switch is None for snapshot in full)
    assert all(net_rx_runs(snapshot) > 0 for snapshot in full)
    assert sum(napi_polls(snapshot) for snapshot in full) > 0
    # Every interval with drops consulted the sampler (walked, or refused for spacing or
    # budget): paused, as in the quiet tier, it is never consulted.
    for snapshot in full[2:]:
        sampling = snapshot.stack_sampling
        assert drops(snapshot) > 0 and sum(sampling.get(k, 0) for k in (
            "drop_walks", "drop_skipped_spacing", "drop_skipped_budget")) > 0, sampling
    last = full[-1]
    assert last.stack_sampling.get("drop_walks", 0) > 0, [s.stack_sampling for s in full[2:]]
    assert any(stack.reason == "SOCKET_RCVBUFF" for stack in last.stacks)


def test_the_capture_records_the_switch_and_time_in_each_tier(tiered):
    tier = tiered["capture"]["tier"]
    assert (tier["mode"], tier["current"]) == ("auto", FULL_TIER)
    assert (tier["switches_to_full"], tier["switches_to_quiet"]) == (1, 0)
    (switch,) = tier["switches"]
    assert switch["to"] == FULL_TIER and switch["why"].startswith("trouble: drops")
    assert switch["at"] == tiered["trouble"].tier_switch.at
    quiet_s = sum(s.interval_s for s in tiered["quiet"]) + tiered["trouble"].interval_s
    full_s = sum(s.interval_s for s in tiered["full"])
    assert tier["quiet_s"] == pytest.approx(quiet_s, abs=0.01)
    assert tier["full_s"] == pytest.approx(full_s, abs=0.01)
    # The parked programs stayed loaded and listed as attached: switching never reloads.
    probes = {probe["name"]: probe["attached"] for probe in tiered["capture"]["probes"]}
    assert probes["softirq"] and probes["napi"] and probes["drop_stacks"]


def test_serve_in_its_default_tier_shows_the_switch_in_its_metrics_and_log(tmp_path):
    """`netprof serve` as a DaemonSet runs it (no --tier: auto): quiet at first, then the
    gauge, the switch counter and the log line once a lab scenario's drops are trouble."""
    from tests.export_readers import read_prometheus, sample_value
    from tests.integration.test_serve import SERVING, ServeProcess, scrape

    serve = ServeProcess(tmp_path / "netprof.prom", tier="auto")
    try:
        port = int(serve.wait_for(SERVING).group(1))
        serve.wait_for("detail tier auto \\(now quiet\\)")
        before = read_prometheus(scrape(port))
        assert sample_value(before, "netprof_detail_tier", mode="auto") == 0
        assert sample_value(before, "netprof_detail_tier_switches_total", to="full") == 0
        with RcvbufDropScenario(pings=0) as scenario:
            scenario.start(1.0)
            scenario.wait()
        serve.wait_for("detail tier → full: trouble: drops")
        # The switch is logged as it is made; the totals take the interval just after.
        deadline = time.monotonic() + 30
        while True:
            after = read_prometheus(scrape(port))
            if sample_value(after, "netprof_detail_tier_switches_total", to="full") or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert sample_value(after, "netprof_detail_tier", mode="auto") == 1
        # Now full: one switch more to full than back to quiet. Usually one and none; a forky
        # guest under emulation once went full, calm (60 s) and full again in this window.
        to_full = sample_value(after, "netprof_detail_tier_switches_total", to="full")
        to_quiet = sample_value(after, "netprof_detail_tier_switches_total", to="quiet") or 0
        assert to_full >= 1 and to_full == to_quiet + 1, (to_full, to_quiet)
        assert sample_value(after, "netprof_detail_tier_seconds_total", tier="quiet") > 0
    finally:
        serve.stop()
