"""profiler.document: the one reader of a profile document every view counts through."""
from __future__ import annotations

import math

import pytest

from profiler.document import ProfileDocument
from profiler.percentiles import log2_percentile_ns, log2_percentiles_ns


def _doc(**pods_and_cpus) -> dict:
    return {"schema": "netprof.profile/v1", "duration_s": 4.0, **pods_and_cpus}


def _pod(netstat_overflows: int | None, *drops: int) -> dict:
    pod = {"pod": "web", "netns": 4026532001, "retransmits": 8,
           "listen": [{"address": "0.0.0.0", "port": 8080 + i, "overflow_drops": n} for i, n in enumerate(drops)]}
    if netstat_overflows is not None:
        pod["netstat"] = {"TcpExt.ListenOverflows": netstat_overflows}
    return pod


@pytest.mark.parametrize(("netstat", "drops", "expected"), [
    (30, (12,), 30),        # the counter sees SYNs consumed for a full queue: more than the drops
    (30, (20, 25), 45),     # the drops saw what a counter read too late missed: more than the counter
    (0, (7,), 7),
    (None, (7,), 7),        # no netstat read (counters not attached)
    (9, (), 9),
    (None, (), 0),
])
def test_listen_overflows_are_the_larger_of_the_counter_and_the_drops(netstat, drops, expected):
    """The detectors' rule, now everyone's: the two count the same events, each may miss some,
    so the larger, never the sum; and not "the counter unless it is 0" (what the report and
    the dashboard did, which showed 30 in the second case)."""
    pod = ProfileDocument(_doc(pods=[_pod(netstat, *drops)])).pods[0]
    assert pod.listen_overflows == expected
    assert pod.listen_overflow_drops == sum(drops)
    assert [listener.listen_overflows for listener in pod.listeners] == list(drops)


def test_pod_figures_and_rates():
    doc = ProfileDocument(_doc(pods=[{
        "pod": "db", "netns": 7, "retransmits": 10, "retransmitted_segments": 14, "rcvqueue_full": 2,
        "drops": {"NETFILTER_DROP": 6, "SOCKET_RCVBUFF": 2},
        "conntrack": {"insert_failed": 5, "drop": 3, "count_now": 100},
        "listen": [{"address": "::", "port": 5432, "accept_queue_peak": 64, "accept_queue_limit": 64}],
    }]))
    pod = doc.pod(7)
    assert pod is doc.pod_named("db") and doc.pod(8) is None
    assert (pod.retransmits, pod.retransmitted_segments, pod.drops_total) == (10, 14, 8)
    assert pod.conntrack_failures == 5          # drop and insert_failed count one event twice
    assert pod.per_s(pod.retransmits) == pytest.approx(2.5)
    [listener] = pod.listeners
    assert listener.label == ":::5432" and listener.under_pressure and listener.fill == 1.0
    old = ProfileDocument(_doc(pods=[{"pod": "old", "netns": 1, "retransmits": 3}])).pods[0]
    assert (old.retransmitted_segments, old.retransmitted_segments_or_skbs) == (0, 3)


def test_cpu_figures_and_percentiles():
    latency = [0] * 10 + [10, 0, 90]            # [1024, 2048): 10, [4096, 8192): 90
    doc = ProfileDocument(_doc(cpus=[{
        "cpu": 3, "softirq": {"NET_RX": {"count": 100, "time_ns": 2_000_000_000, "latency_log2_ns": latency}},
        "napi": [{"device": "eth0", "polls": 10, "budget_exhausted": 4}, {"device": "eth1", "polls": 5}],
        "softnet": {"time_squeeze": 3}, "drops": {"CPU_BACKLOG": 9},
    }]))
    cpu = doc.cpu(3)
    assert cpu.softirq_share("NET_RX") == pytest.approx(0.5) and cpu.softirq_share("NET_TX") == 0.0
    assert (cpu.napi_polls, cpu.napi_budget_exhausted, cpu.time_squeeze) == (15, 4, 3)
    assert cpu.backlog_drops == 9               # no softnet `dropped` read: the drop reason
    p50, p99 = cpu.latency_percentiles_ns("NET_RX", (0.5, 0.99))
    # Interpolated inside [4096, 8192), as Prometheus' histogram_quantile(): not the bound 8192.
    assert p50 == pytest.approx(4096 + 4096 * 40 / 90)
    assert p99 == pytest.approx(4096 + 4096 * 89 / 90)
    assert cpu.latency_percentiles_ns("NET_TX") == [None, None, None]


def test_the_shared_log2_percentile_interpolates_where_the_dashboard_took_the_bound():
    # The dashboard's old helper said 16 (the bucket's upper bound) for this one.
    assert log2_percentile_ns([0, 10, 0, 90], 0.5) == pytest.approx(8 + 8 * 40 / 90)
    assert log2_percentile_ns([], 0.5) is None
    assert log2_percentiles_ns([0, 0, 4], (0.0, 1.0)) == [4.0, 8.0]
    assert not math.isnan(log2_percentile_ns([1], 0.99))


def test_a_document_without_time_has_no_rates_and_empty_sections():
    doc = ProfileDocument({"duration_s": 0, "pods": [_pod(3, 1)], "cpus": [{"cpu": 0}]})
    assert doc.per_s(10) == 0.0 and doc.pods[0].per_s(3) == 0.0
    assert doc.cpus[0].softirq_share("NET_RX") == 0.0
    empty = ProfileDocument({})
    assert (empty.pods, empty.cpus, empty.findings, empty.flows) == ((), (), [], [])
    assert empty.sysctl_int("net.core.somaxconn") is None


def test_node_context_and_findings():
    doc = ProfileDocument(_doc(
        pods=[_pod(1)],
        node={"sysctls": {"net.core.somaxconn": "4096", "net.core.rmem_max": "big"},
              "pod_sysctls": {"4026532001": {"net.core.somaxconn": "128"}}},
        findings=[{"kind": "listen-overflow", "pod": "web"}, {"kind": "softirq-imbalance", "cpu": 1}],
    ))
    assert doc.sysctl_int("net.core.somaxconn") == 4096 and doc.sysctl_int("net.core.rmem_max") is None
    assert doc.pod_sysctl(doc.pods[0], "net.core.somaxconn") == "128"
    assert [f["kind"] for f in doc.findings_for_pod("web")] == ["listen-overflow"]
    assert [f["kind"] for f in doc.findings_for_cpu(1)] == ["softirq-imbalance"]


def test_built_from_a_capture_through_its_json():
    class Capture:
        def to_json(self) -> dict:
            return _doc(pods=[_pod(2, 5)])

    assert ProfileDocument.from_capture(Capture()).pods[0].listen_overflows == 5


def test_built_from_a_real_capture():
    from tests.unit.test_capture import sample_capture

    doc = ProfileDocument.from_capture(sample_capture())
    lossy = doc.pod_named("lossy")
    assert (lossy.netns, lossy.retransmits, lossy.retransmitted_segments) == (11, 42, 70)
    assert doc.per_s(lossy.retransmits) == pytest.approx(21.0)   # 2 s of capture
    assert [flow["states"] for flow in doc.flows_of(11)] == [{"ESTABLISHED": 41, "SYN_SENT": 1}]


def test_the_queue_delay_sampling_ratio_comes_from_the_capture():
    from profiler.capture import cpu_json
    from profiler.capture_file import validate_capture
    from profiler.snapshot import CpuInterval, SoftirqVector
    from tests.unit.test_capture import sample_capture

    # Captures from before the kernel sampled queue delay measured every run.
    doc = ProfileDocument(_doc(cpus=[{"cpu": 0, "softirq": {"NET_RX": {"count": 8}}}]))
    assert doc.cpu(0).queue_delay_sample_every("NET_RX") == 1
    capture = sample_capture().to_json()
    capture["cpus"] = [cpu_json(CpuInterval(1, {"NET_RX": SoftirqVector(16, 1000, (16,), (2,), 2)}))]
    assert ProfileDocument(capture).cpu(1).queue_delay_sample_every("NET_RX") == 8
    validate_capture(capture)
    capture["cpus"][0]["softirq"]["NET_RX"]["queue_delay_sample_every"] = 0
    with pytest.raises(Exception, match="queue_delay_sample_every"):
        validate_capture(capture)
