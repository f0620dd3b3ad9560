"""NET_RX softirq time, NAPI polls and softnet counters per CPU, on the real kernel.

A UDP blast from a pinned sender, with RPS steering its receive path to a target CPU
(NetRxOneCpuScenario). Two captures in one lab: the target is CPU a, then CPU b, and the
sender sits on the other one each time, so what the profiler reports must follow the mask,
not whatever this machine happens to do on one CPU.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from profiler.capture import Capture
from profiler.lab.scenario_cpu import NetRxOneCpuScenario, usable_cpus
from profiler.lab.scenarios import ScenarioResult, lab_time_scale
from profiler.probes.napi import BACKLOG_DEVICE
from profiler.probes.softirq import QUEUE_DELAY_SAMPLE_EVERY, histogram_bounds_ns
from profiler.profile import ProfileOptions, run_profile
from profiler.snapshot import CpuInterval, SoftirqVector
from profiler.sources.napi import NapiSource
from profiler.sources.softirq import SoftirqSource
from profiler.sources.softnet import SoftnetSource

pytestmark = pytest.mark.usefixtures("bpf_ready", "lab_ready")

BLAST_S = 3.0
# Measured (docs/probes/softirq.md): the target spent 1.59-2.38 s in NET_RX, the sender's
# CPU 0.08-0.46 s. The sender's runs are real kernel work, the RPS IPIs it sends (checked by
# count below), whose cost against the packets' own varies by machine: ratios 10-20 on a
# quiet host, 4.1 on a quiet host at 12:20 on 2026-12-05, 2.2-2.4 under another lab's load
# and 2.9 in the 6.1 guest under emulation; 1.47 in a fresh-clone CI run on 2026-12-06 with
# the machine otherwise idle (target 1.40 s, sender 0.95 s for 139,564 IPIs: 6.8 us each).
# Which CPU is the point, not how fast IPIs are: charging the time to the wrong CPU gives a
# ratio below 1, so the bound is 1 and the IPI count check below says what the rest is.
MIN_TARGET_NET_RX_S = 0.5
MIN_TIME_RATIO = 1.0
# The sender's NET_RX runs against the target's received_rps (softnet_stat): one IPI per run.
RPS_IPI_COUNT_TOLERANCE = 0.05


@dataclass(frozen=True)
class NetRxRun:
    target_cpu: int
    sender_cpu: int
    capture: Capture
    result: ScenarioResult

    def cpu(self, cpu: int) -> CpuInterval:
        totals = {c.cpu: c for c in self.capture.cpu_totals()}
        return totals.get(cpu, CpuInterval(cpu))

    def net_rx(self, cpu: int) -> SoftirqVector:
        return self.cpu(cpu).softirq.get("NET_RX", SoftirqVector())

    @property
    def datagrams_sent(self) -> int:
        blast = next(w for w in self.result.workloads if w.role == "blast")
        return int(blast.summary.get("datagrams", 0))


@pytest.fixture(scope="module")
def net_rx_runs() -> list[NetRxRun]:
    from tests.conftest import missing_for_bpf, missing_for_lab, skip_or_fail

    reason = missing_for_bpf() or missing_for_lab()
    if reason:
        skip_or_fail(reason)
    reason = NetRxOneCpuScenario.missing()
    if reason:
        pytest.skip(reason)
    first, second = usable_cpus()[:2]
    runs = []
    with NetRxOneCpuScenario(target_cpu=first, sender_cpu=second) as scenario:
        for target, sender in ((first, second), (second, first)):
            scenario.retarget(target, sender)
            # The capture ends with the blast (until=), however long a slow machine takes to
            # start it: a fixed window cut the blast short under emulation, and the checks
            # below compare the capture with everything the blast sent.
            capture = run_profile(
                ProfileOptions(duration_s=(BLAST_S + 15.0) * lab_time_scale(), interval_s=0.5),
                on_attached=lambda: scenario.start(BLAST_S), log=lambda msg: None,
                sources=[SoftirqSource(), NapiSource(), SoftnetSource()], until=scenario.finished,
            )
            result = scenario.wait()
            runs.append(NetRxRun(target, sender, capture, result))
    for run in runs:
        print(f"target CPU {run.target_cpu}: NET_RX {run.net_rx(run.target_cpu).time_ns / 1e9:.3f} s "
              f"({run.net_rx(run.target_cpu).count} runs), sender CPU {run.sender_cpu}: "
              f"{run.net_rx(run.sender_cpu).time_ns / 1e9:.3f} s ({run.net_rx(run.sender_cpu).count} runs); "
              f"sent {run.datagrams_sent}; napi target {run.cpu(run.target_cpu).napi}; "
              f"sender {run.cpu(run.sender_cpu).napi}; softnet target {dict(run.cpu(run.target_cpu).softnet)} "
              f"sender {dict(run.cpu(run.sender_cpu).softnet)}")
    return runs


def test_every_probe_attached(net_rx_runs):
    for run in net_rx_runs:
        assert {s.name: s.attached for s in run.capture.probes} == {"softirq": True, "napi": True, "softnet": True}


def test_net_rx_time_follows_the_rps_target(net_rx_runs):
    for run in net_rx_runs:
        target, other = run.net_rx(run.target_cpu), run.net_rx(run.sender_cpu)
        assert run.datagrams_sent > 10_000, run.result.workloads
        assert target.count > 0
        assert target.time_ns >= MIN_TARGET_NET_RX_S * 1e9, (run.target_cpu, target)
        assert target.time_ns > MIN_TIME_RATIO * other.time_ns, (
            f"NET_RX on target CPU {run.target_cpu}: {target.time_ns / 1e9:.3f} s, "
            f"on sender CPU {run.sender_cpu}: {other.time_ns / 1e9:.3f} s")
        # What the sender's CPU spent its NET_RX on: each of its runs ends by sending the RPS
        # IPIs it queued, and the kernel counts each IPI the target received.
        received_rps = run.cpu(run.target_cpu).softnet.get("received_rps", 0)
        assert received_rps > 0
        assert abs(other.count - received_rps) <= RPS_IPI_COUNT_TOLERANCE * received_rps, (
            f"sender CPU {run.sender_cpu}: {other.count} NET_RX runs; target received {received_rps} RPS IPIs")


def test_backlog_napi_polls_on_the_target(net_rx_runs):
    for run in net_rx_runs:
        target = {d.device: d for d in run.cpu(run.target_cpu).napi}
        other = {d.device: d for d in run.cpu(run.sender_cpu).napi}
        # veth without GRO/XDP hands packets to netif_rx: the per-CPU backlog, no device.
        assert BACKLOG_DEVICE in target, target
        backlog = target[BACKLOG_DEVICE]
        assert backlog.polls > 0
        # Every datagram crosses the backlog twice (bridge hop, then delivery), both on
        # the target; a backlog overflow (softnet `dropped`) can lose part of the second.
        assert backlog.packets >= run.datagrams_sent, (backlog, run.datagrams_sent)
        other_packets = other[BACKLOG_DEVICE].packets if BACKLOG_DEVICE in other else 0
        assert other_packets <= backlog.packets // 20, (other, backlog)


def test_softnet_processed_on_the_target_agrees_with_napi(net_rx_runs):
    for run in net_rx_runs:
        softnet = run.cpu(run.target_cpu).softnet
        other = run.cpu(run.sender_cpu).softnet
        # Two backlog hops per datagram, both on the target: each one either processed or
        # dropped there (a full backlog), nowhere else.
        handled = softnet.get("processed", 0) + softnet.get("dropped", 0)
        assert handled >= 1.8 * run.datagrams_sent, (softnet, run.datagrams_sent)
        assert other.get("processed", 0) <= softnet["processed"] // 20, (other, softnet)
        # Two views of the same packets: softnet's counter (no BPF) and the NAPI polls'
        # work (BPF). On the RPS target the BPF programs missed ~1% of NET_RX runs (and
        # their polls) that /proc/softirqs and ftrace saw, with no recursion miss recorded
        # (docs/probes/softirq.md); the agreement asked for here leaves room for that.
        napi_packets = sum(d.packets for d in run.cpu(run.target_cpu).napi)
        assert napi_packets <= softnet["processed"] + 100, (napi_packets, softnet)
        assert napi_packets >= 0.95 * softnet["processed"], (napi_packets, softnet)
        # The sender's CPU hands the packets over with IPIs: the target receives them.
        assert softnet.get("received_rps", 0) > 0


def test_histograms_add_up_to_counts_and_time(net_rx_runs):
    for run in net_rx_runs:
        for cpu in run.capture.cpu_totals():
            for name, vector in cpu.softirq.items():
                where = f"CPU {cpu.cpu} {name}"
                assert sum(vector.latency_log2_ns) == vector.count, (where, vector)
                # Only sampled runs raised after attach have a queue delay.
                assert sum(vector.queue_delay_log2_ns) <= vector.count, (where, vector)
                # The run-time histogram was bucketed by the BPF program's log2: the time
                # it reports separately must lie within what the buckets allow.
                low, high = histogram_bounds_ns(vector.latency_log2_ns)
                assert low <= vector.time_ns and (high is None or vector.time_ns <= high), (where, vector)
                # The same for the queue delays' sum, kept beside their histogram.
                low, high = histogram_bounds_ns(vector.queue_delay_log2_ns)
                assert low <= vector.queue_delay_ns and (high is None or vector.queue_delay_ns <= high), \
                    (where, vector)
        # One run in QUEUE_DELAY_SAMPLE_EVERY has its delay measured, chosen by a countdown at
        # entry: exactly that share of the runs, less the few raised before attach or whose
        # raise went unseen.
        target = run.net_rx(run.target_cpu)
        sampled = sum(target.queue_delay_log2_ns)
        expected = target.count / QUEUE_DELAY_SAMPLE_EVERY
        assert 0.9 * expected <= sampled <= expected + 1, (sampled, target.count)
