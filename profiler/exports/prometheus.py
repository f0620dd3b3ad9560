"""Prometheus metrics from a profile JSON document (a saved capture, or `netprof serve`'s
running totals), through prometheus-client.

Counters are totals since the start of the capture (for `serve`: since it started), so they
only ever go up while one process runs; Prometheus' rate() turns them into rates. Pods are
the `pod` and `netns` labels, CPUs the `cpu` label. Histograms use Prometheus' cumulative
`le` buckets; the kernel's log2 buckets map onto them exactly (bucket [2^i, 2^(i+1)) ns
counts into le = 2^(i+1) ns), so histogram_quantile() over them equals the percentiles of
histograms.json (both interpolate linearly in the bucket).

Kernel stacks are not metrics (one series per stack would be unbounded cardinality); they
are in the folded and speedscope exports.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.exposition import generate_latest
from prometheus_client.utils import floatToGoString

from ..inert import inert_tree
from ..probes.softirq import LOG2_SLOTS

PREFIX = "netprof"
POD_LABELS = ["pod", "netns"]
LISTENER_LABELS = [*POD_LABELS, "address", "port"]
LEVEL_SUFFIX = "_now"   # a level (conntrack count_now), not a counter: exported as a gauge
# Softirq histograms: le from 2^10 ns (~1 µs; faster runs all count there) to 2^31 ns
# (~2.1 s), one bucket per power of two — 23 series per CPU and vector with +Inf, the same
# set on every scrape whatever the data, as histogram_quantile() needs.
SOFTIRQ_LE_EXPONENTS = range(10, LOG2_SLOTS)


def _counter(name: str, documentation: str, labels: list[str]) -> CounterMetricFamily:
    return CounterMetricFamily(f"{PREFIX}_{name}", documentation, labels=labels)


def _gauge(name: str, documentation: str, labels: list[str]) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{PREFIX}_{name}", documentation, labels=labels)


def log2_ns_buckets(counts: list[int]) -> list[tuple[str, float]]:
    """Cumulative (le seconds, count) over the fixed SOFTIRQ_LE_EXPONENTS, then +Inf."""
    buckets = []
    for exponent in SOFTIRQ_LE_EXPONENTS:
        # Kernel bucket i holds [2^i, 2^(i+1)) ns: all of buckets 0..exponent-1 are < 2^exponent.
        buckets.append((_le(2 ** exponent / 1e9), float(sum(counts[:exponent]))))
    buckets.append(("+Inf", float(sum(counts))))
    return buckets


def depth_buckets(counts: list[int], limit: int) -> list[tuple[str, float]]:
    """Cumulative (le, count) of an accept-queue depth histogram. Depth bucket 0 is an empty
    queue and bucket i >= 1 [2^(i-1), 2^i); depths are integers, so bucket i is le = 2^i - 1.
    Buckets run to the one holding limit + 1 (the deepest a queue gets), a stable set."""
    # The limit+1 depth lives in bucket (limit+1).bit_length().
    top = max(len(counts), (limit + 1).bit_length() + 1)
    buckets = []
    total = 0
    for index in range(top):
        total += counts[index] if index < len(counts) else 0
        buckets.append((str((1 << index) - 1), float(total)))
    buckets.append(("+Inf", float(sum(counts))))
    return buckets


def _le(seconds: float) -> str:
    return floatToGoString(seconds)


def metric_families(doc: dict) -> list[Metric]:
    # Label values are outside text (pod, device, drop reason...). prometheus-client escapes
    # what the exposition format needs (backslash, double quote, line feed: a label keeps its
    # line breaks, escaped) but passes ESC and every other control to whoever reads the text:
    # made inert first.
    doc = inert_tree(doc, multiline_fields=None)
    families: list[Metric] = []
    families += _pod_families(doc.get("pods", []))
    families += _cpu_families(doc.get("cpus", []))
    families += _node_families(doc)
    return families


def _pod_families(pods: list[dict]) -> list[Metric]:
    retransmits = _counter("retransmits", "TCP retransmitted skbs (tcp:tcp_retransmit_skb hits)", POD_LABELS)
    segments = _counter("retransmitted_segments", "MSS segments in retransmitted skbs (comparable to TcpRetransSegs)",
                        POD_LABELS)
    drops = _counter("drops", "skbs dropped by the kernel, by drop reason (skb:kfree_skb)", [*POD_LABELS, "reason"])
    rcvqueue = _counter("rcvqueue_full", "sock_rcvqueue_full events: a socket receive buffer was full", POD_LABELS)
    netstat = _counter("pod_netstat", "the pod netns' own SNMP/netstat counters (/proc/net/netstat, snmp)",
                       [*POD_LABELS, "counter"])
    conntrack = _counter("conntrack", "per-netns conntrack statistics", [*POD_LABELS, "stat"])
    conntrack_levels = _gauge("conntrack_level", "conntrack levels (count: tracked connections, max, buckets)",
                              [*POD_LABELS, "stat"])
    overflow_drops = _counter("listen_overflow_drops", "TCP_LISTEN_OVERFLOW drops charged to a listener",
                              LISTENER_LABELS)
    samples_full = _counter("listen_samples_full", "accept-queue samples that found the queue full", LISTENER_LABELS)
    queue_limit = _gauge("listen_accept_queue_limit", "accept-queue limit: min(listen() backlog, somaxconn)",
                         LISTENER_LABELS)
    depth = HistogramMetricFamily(f"{PREFIX}_listen_accept_queue_depth",
                                  "sampled accept-queue depth (connections waiting for accept())",
                                  labels=LISTENER_LABELS)
    for pod in pods:
        labels = [str(pod["pod"]), str(pod["netns"])]
        retransmits.add_metric(labels, pod.get("retransmits", 0))
        segments.add_metric(labels, pod.get("retransmitted_segments", 0))
        rcvqueue.add_metric(labels, pod.get("rcvqueue_full", 0))
        for reason, count in sorted(pod.get("drops", {}).items()):
            drops.add_metric([*labels, reason], count)
        for counter, count in sorted(pod.get("netstat", {}).items()):
            netstat.add_metric([*labels, counter], count)
        for stat, value in sorted(pod.get("conntrack", {}).items()):
            if stat.endswith(LEVEL_SUFFIX):
                conntrack_levels.add_metric([*labels, stat.removesuffix(LEVEL_SUFFIX)], value)
            else:
                conntrack.add_metric([*labels, stat], value)
        for listener in pod.get("listen", []):
            listener_labels = [*labels, str(listener["address"]), str(listener["port"])]
            overflow_drops.add_metric(listener_labels, listener.get("overflow_drops", 0))
            samples_full.add_metric(listener_labels, listener.get("samples_full", 0))
            limit = int(listener.get("accept_queue_limit", 0))
            if limit:
                queue_limit.add_metric(listener_labels, limit)
            counts = [int(c) for c in listener.get("accept_queue_depth_log2", [])]
            if sum(counts):
                # Depths are counts, not measurements: their sum is not kept.
                depth.add_metric(listener_labels, depth_buckets(counts, limit), sum_value=None)
    return [retransmits, segments, drops, rcvqueue, netstat, conntrack, conntrack_levels,
            overflow_drops, samples_full, queue_limit, depth]


def _cpu_families(cpus: list[dict]) -> list[Metric]:
    cpu_labels = ["cpu"]
    runs = _counter("softirq_runs", "softirq handler runs", [*cpu_labels, "vector"])
    seconds = _counter("softirq_seconds", "time spent in softirq handlers", [*cpu_labels, "vector"])
    latency = HistogramMetricFamily(f"{PREFIX}_softirq_latency_seconds",
                                    "softirq handler run time, softirq_entry to softirq_exit",
                                    labels=[*cpu_labels, "vector"])
    queue_delay = HistogramMetricFamily(f"{PREFIX}_softirq_queue_delay_seconds",
                                        "delay from softirq_raise to softirq_entry", labels=[*cpu_labels, "vector"])
    polls = _counter("napi_polls", "NAPI polls", [*cpu_labels, "device"])
    packets = _counter("napi_packets", "packets handled by NAPI polls", [*cpu_labels, "device"])
    exhausted = _counter("napi_budget_exhausted", "NAPI polls that used their whole budget", [*cpu_labels, "device"])
    softnet = _counter("softnet", "/proc/net/softnet_stat counters", [*cpu_labels, "counter"])
    cpu_drops = _counter("cpu_drops", "skb drops by reason, on the CPU that dropped them", [*cpu_labels, "reason"])
    for cpu in cpus:
        label = str(cpu["cpu"])
        for vector, stats in sorted(cpu.get("softirq", {}).items()):
            runs.add_metric([label, vector], stats.get("count", 0))
            seconds.add_metric([label, vector], stats.get("time_ns", 0) / 1e9)
            run_time = [int(c) for c in stats.get("latency_log2_ns", [])]
            latency.add_metric([label, vector], log2_ns_buckets(run_time), sum_value=stats.get("time_ns", 0) / 1e9)
            delay = [int(c) for c in stats.get("queue_delay_log2_ns", [])]
            # The kernel keeps no sum of queueing delays: _sum is left out, not made up.
            queue_delay.add_metric([label, vector], log2_ns_buckets(delay), sum_value=None)
        for device in cpu.get("napi", []):
            labels = [label, str(device["device"])]
            polls.add_metric(labels, device.get("polls", 0))
            packets.add_metric(labels, device.get("packets", 0))
            exhausted.add_metric(labels, device.get("budget_exhausted", 0))
        for counter, value in sorted(cpu.get("softnet", {}).items()):
            softnet.add_metric([label, counter], value)
        for reason, count in sorted(cpu.get("drops", {}).items()):
            cpu_drops.add_metric([label, reason], count)
    return [runs, seconds, latency, queue_delay, polls, packets, exhausted, softnet, cpu_drops]


def _node_families(doc: dict) -> list[Metric]:
    # The label keeps its name `map` (dashboards use it); a program's skipped runs are
    # <program>_recursion_misses:<hook> (profiler/cost.py).
    lost = _counter("lost_events", "events the kernel side could not count: by map (the map was full) "
                    "or <program>_recursion_misses:<hook> (the kernel skipped the program's run)", ["map"])
    for name, count in sorted((doc.get("lost_events") or {}).items()):
        lost.add_metric([name], count)
    ignored = _counter("ignored_events", "events seen and deliberately not counted, by kind", ["kind"])
    for name, count in sorted((doc.get("ignored_events") or {}).items()):
        ignored.add_metric([name], count)
    attached = _gauge("probe_attached", "1 when the probe is attached, 0 when not (see the capture for why)",
                      ["probe", "via"])
    for probe in doc.get("probes", []):
        attached.add_metric([probe["name"], probe["via"]], 1 if probe["attached"] else 0)
    intervals = _counter("intervals", "sampling intervals read", [])
    intervals.add_metric([], doc.get("intervals", 0))
    sampled = _counter("sampled_seconds", "time covered by the sampled intervals", [])
    sampled.add_metric([], doc.get("duration_s", 0.0))
    return [lost, ignored, attached, intervals, sampled]


class DocumentCollector(Collector):
    """A prometheus-client collector over whatever profile JSON `document()` returns now."""

    def __init__(self, document: Callable[[], dict]):
        self._document = document

    def collect(self) -> Iterator[Metric]:
        yield from metric_families(self._document())


def registry_for(document: Callable[[], dict]) -> CollectorRegistry:
    # auto_describe off: families are only known once a document is there.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DocumentCollector(document))
    return registry


def exposition_text(doc: dict) -> str:
    """The Prometheus text exposition (format 0.0.4) of one profile JSON document."""
    return generate_latest(registry_for(lambda: doc)).decode()
