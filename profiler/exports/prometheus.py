"""Prometheus metrics from a profile JSON document (a saved capture, or `netprof serve`'s
running totals), through prometheus-client. docs/exports.md lists every family.

Made to be queried the way Prometheus users query node metrics:

- Counters are totals since the start of the capture (for `serve`: since it started), so
  they only ever go up while one process runs; rate() turns them into rates.
- One metric per counter, named as node_exporter names the same thing where it has one
  (`netprof_softnet_times_squeezed_total`, `netprof_netstat_TcpExt_ListenOverflows`,
  `netprof_nf_conntrack_stat_insert_failed`), so sum() over a family always means something.
- Pods carry `namespace` and `pod` as kube-state-metrics and cAdvisor use them (joins work),
  plus `netns` (the inode). A netns that is not a Kubernetes pod has namespace="" and
  pod="host" (the node's own netns), its name (a named netns), or "netns:<inode>".
- Every histogram has one fixed `le` set per family whatever the data, `_count` and `_sum`.
- Series exist at 0 once their probe is attached: every known pod gets its counters, every
  CPU its softirq vectors and softnet counters; per-reason series only for the drop reasons
  seen on the node (a zero for each of the kernel's ~120 reasons per pod would not pay).

Kernel stacks are not metrics (one series per stack would be unbounded cardinality); they
are in the folded and speedscope exports.
"""
from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import (
    CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric, UntypedMetricFamily,
)
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.utils import floatToGoString

from .. import __version__
from ..capture import MAX_DROP_SITES
from ..document import CpuView, ListenerView, ProfileDocument
from ..inert import inert, inert_tree
from ..kernel.log2_histogram import LOG2_SLOTS
from ..snapshot import QUEUE_DELAY_DESCRIPTION
from ..system.listeners import FILL_RATIO_BOUNDS

PREFIX = "netprof"
POD_LABELS = ["namespace", "pod", "netns"]
LISTENER_LABELS = [*POD_LABELS, "address", "port"]
LEVEL_SUFFIX = "_now"   # a level (conntrack count_now), not a counter: exported as a gauge
# le of the softirq histograms, as powers of two of nanoseconds; the kernel's buckets are
# [2^i, 2^(i+1)) ns, so each le is exact. Run times start at 2^10 ns (~1 µs: a NET_RX run
# is µs), queueing delays at 2^6 ns (64 ns: their median is a few hundred ns) — both to
# 2^31 ns (~2.1 s), then +Inf.
SOFTIRQ_LATENCY_LE_EXPONENTS = range(10, LOG2_SLOTS)
SOFTIRQ_QUEUE_DELAY_LE_EXPONENTS = range(6, LOG2_SLOTS)
# /proc/net/softnet_stat columns → node_exporter's softnet metric names.
SOFTNET_METRICS = {
    "processed": "softnet_processed_total",
    "dropped": "softnet_dropped_total",
    "time_squeeze": "softnet_times_squeezed_total",
    "received_rps": "softnet_received_rps_total",
    "flow_limit_count": "softnet_flow_limit_count_total",
}
# Conntrack levels → node_exporter's nf_conntrack names (node_exporter has no bucket count).
CONNTRACK_LEVELS = {
    "count_now": ("nf_conntrack_entries", "connections tracked in the pod's netns"),
    "max_now": ("nf_conntrack_entries_limit", "nf_conntrack_max, the node-global limit the entries count against"),
    "buckets_now": ("nf_conntrack_buckets", "size of the conntrack hash table (node-global)"),
}
# Zero from the start for every pod while conntrack is read: what the alerts watch.
CONNTRACK_ALWAYS = ("insert_failed", "drop", "early_drop")
# Pod netstat counters zero from the start (the ones the listen source reads in every pod).
NETSTAT_ALWAYS = (
    "TcpExt.ListenOverflows", "TcpExt.ListenDrops", "TcpExt.TCPReqQFullDrop", "TcpExt.TCPReqQFullDoCookies",
    "TcpExt.SyncookiesSent", "Tcp.OutSegs", "Tcp.RetransSegs", "Udp.RcvbufErrors", "TcpExt.TCPBacklogDrop",
)
# Drop sites with a series of their own (then one "other" per reason): a kernel has
# hundreds of places that drop, and a node typically uses a handful. A capture keeps this
# many; serve names the first this many it sees.
MAX_SITE_SERIES = MAX_DROP_SITES
OTHER_SITE = "other"
_METRIC_NAME_PART = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


def _le(seconds: float) -> str:
    return floatToGoString(seconds)


def log2_ns_buckets(counts: list[int], exponents: range = SOFTIRQ_LATENCY_LE_EXPONENTS) -> list[tuple[str, float]]:
    """Cumulative (le seconds, count) over fixed power-of-two bounds, then +Inf."""
    buckets = []
    for exponent in exponents:
        # Kernel bucket i holds [2^i, 2^(i+1)) ns: all of buckets 0..exponent-1 are < 2^exponent.
        buckets.append((_le(2 ** exponent / 1e9), float(sum(counts[:exponent]))))
    buckets.append(("+Inf", float(sum(counts))))
    return buckets


def fill_ratio_buckets(counts: list[int]) -> list[tuple[str, float]]:
    """Cumulative (le, count) of a listener's fill-ratio samples over FILL_RATIO_BOUNDS."""
    counts = list(counts) + [0] * (len(FILL_RATIO_BOUNDS) + 1 - len(counts))
    buckets = [(_le(bound), float(sum(counts[: index + 1]))) for index, bound in enumerate(FILL_RATIO_BOUNDS)]
    buckets.append(("+Inf", float(sum(counts))))
    return buckets


def pod_identity(pod: dict) -> tuple[str, str]:
    """(namespace, pod) as kube-state-metrics names them; ("", label) for a netns that is
    not a Kubernetes pod (host, a named netns, netns:<inode>)."""
    kubernetes = pod.get("kubernetes") or {}
    if kubernetes.get("name"):
        return str(kubernetes.get("namespace", "")), str(kubernetes["name"])
    return "", str(pod["pod"])


class _Families:
    """Metric families by name, in the order first asked for; label values made inert."""

    def __init__(self) -> None:
        self._families: dict[str, Metric] = {}

    def get(self, kind: type, name: str, documentation: str, labels: list[str]) -> Metric:
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = kind(f"{PREFIX}_{name}", documentation, labels=labels)
        return family

    def add(self, kind: type, name: str, documentation: str, labels: dict[str, object], value: float) -> None:
        family = self.get(kind, name, documentation, list(labels))
        family.add_metric([inert(v, multiline=True) for v in labels.values()], value)

    def histogram(self, name: str, documentation: str, labels: dict[str, object],
                  buckets: list[tuple[str, float]], sum_value: float | None) -> None:
        family = self.get(HistogramMetricFamily, name, documentation, list(labels))
        family.add_metric([inert(v, multiline=True) for v in labels.values()], buckets, sum_value=sum_value)

    def all(self) -> list[Metric]:
        return list(self._families.values())


def _attached(doc: dict) -> Callable[[str], bool]:
    """Whether a probe was attached; a document without a probe list claims nothing absent."""
    if "probes" not in doc:
        return lambda name: True
    names = {probe["name"] for probe in doc.get("probes") or [] if probe.get("attached")}
    return names.__contains__


def metric_families(doc: dict, per_cpu: bool = True) -> list[Metric]:
    """Every family of one document. per_cpu=False sums the per-CPU families over the
    node's CPUs (no `cpu` label): a fixed number of series per node whatever its size."""
    # Label values are outside text (pod, device, drop reason...). prometheus-client escapes
    # what the exposition format needs (backslash, double quote, line feed) but passes ESC
    # and every other control to whoever reads the text: made inert first.
    doc = inert_tree(doc, multiline_fields=None)
    families = _Families()
    attached = _attached(doc)
    document = ProfileDocument(doc)
    _pod_families(families, document, attached)
    _cpu_families(families, document.cpus, attached, per_cpu)
    _drop_site_families(families, doc, attached)
    _node_families(families, doc)
    _tier_families(families, document)
    _cost_families(families, doc.get("cost"))
    return families.all()


def _node_drop_reasons(document: ProfileDocument) -> set[str]:
    reasons = {reason for pod in document.pods for reason in pod.drops}
    reasons |= {reason for cpu in document.cpus for reason in cpu.drops}
    return reasons


def _pod_families(families: _Families, document: ProfileDocument, attached: Callable[[str], bool]) -> None:
    reasons = sorted(_node_drop_reasons(document))
    for pod in document.pods:
        namespace, name = pod_identity(pod.raw)
        labels = {"namespace": namespace, "pod": name, "netns": pod.netns}
        if attached("tcp_retransmits") or pod.retransmits:
            families.add(CounterMetricFamily, "retransmits", "TCP retransmitted skbs (tcp:tcp_retransmit_skb hits)",
                         labels, pod.retransmits)
            families.add(CounterMetricFamily, "retransmitted_segments",
                         "MSS segments in retransmitted skbs (comparable to TcpRetransSegs)",
                         labels, pod.retransmitted_segments)
        for reason in (reasons if attached("skb_drops") else sorted(pod.drops)):
            families.add(CounterMetricFamily, "drops", "skbs dropped by the kernel, by drop reason (skb:kfree_skb)",
                         {**labels, "reason": reason}, pod.drop_count(reason))
        if attached("rcvqueue_full") or pod.rcvqueue_full:
            families.add(CounterMetricFamily, "rcvqueue_full",
                         "sock_rcvqueue_full events: a socket receive buffer was full", labels, pod.rcvqueue_full)
        if attached("netns_counters") or attached("skb_drops") or pod.listen_overflows:
            families.add(CounterMetricFamily, "listen_overflows",
                         "accept-queue overflows in the pod as the findings, report and dashboard count them: "
                         "the larger of TcpExt.ListenOverflows and its listeners' TCP_LISTEN_OVERFLOW drops",
                         labels, pod.listen_overflows)
        _pod_netstat(families, labels, pod.netstat, attached("netns_counters"))
        _pod_conntrack(families, labels, pod.conntrack, attached("conntrack_stats"))
        for listener in pod.listeners:
            _listener(families, {**labels, "address": listener.address, "port": listener.port}, listener)


def _pod_netstat(families: _Families, labels: dict, netstat: dict, attached: bool) -> None:
    counters = dict.fromkeys(NETSTAT_ALWAYS, 0) if attached else {}
    counters.update(netstat)
    for counter, value in sorted(counters.items()):
        group, _, field = counter.partition(".")
        # node_exporter's names: node_netstat_<Group>_<Field>, untyped.
        if not (_METRIC_NAME_PART.match(group) and _METRIC_NAME_PART.match(field)):
            continue   # not a /proc/net/netstat or snmp name: no metric name to give it
        families.add(UntypedMetricFamily, f"netstat_{group}_{field}",
                     f"{group}: {field} of the pod's netns (/proc/net/netstat, snmp), a counter", labels, value)


def _pod_conntrack(families: _Families, labels: dict, conntrack: dict, attached: bool) -> None:
    stats = dict.fromkeys(CONNTRACK_ALWAYS, 0) if attached else {}
    stats.update(conntrack)
    for stat, value in sorted(stats.items()):
        if stat in CONNTRACK_LEVELS:
            name, documentation = CONNTRACK_LEVELS[stat]
            families.add(GaugeMetricFamily, name, documentation, labels, value)
        elif not stat.endswith(LEVEL_SUFFIX) and _METRIC_NAME_PART.match(stat):
            families.add(UntypedMetricFamily, f"nf_conntrack_stat_{stat}",
                         f"conntrack statistic {stat} of the pod's netns, summed over CPUs, a counter", labels, value)


def _listener(families: _Families, labels: dict, listener: ListenerView) -> None:
    families.add(CounterMetricFamily, "listen_overflow_drops", "TCP_LISTEN_OVERFLOW drops charged to a listener",
                 labels, listener.overflow_drops)
    families.add(CounterMetricFamily, "listen_samples_full", "accept-queue samples that found the queue full",
                 labels, listener.samples_full)
    if listener.accept_queue_limit:
        families.add(GaugeMetricFamily, "listen_accept_queue_limit",
                     "accept-queue limit: min(listen() backlog, somaxconn)", labels, listener.accept_queue_limit)
    families.add(GaugeMetricFamily, "listen_accept_queue_peak",
                 "deepest accept queue sampled (for serve: since it started)", labels, listener.accept_queue_peak)
    if listener.fill_ratio_counts is not None:
        families.histogram("listen_accept_queue_fill_ratio",
                           "sampled accept-queue depth / limit (1: at the limit; the kernel drops above it)",
                           labels, fill_ratio_buckets(list(listener.fill_ratio_counts)),
                           sum_value=listener.fill_ratio_sum)


def _cpu_groups(cpus: tuple[CpuView, ...], per_cpu: bool) -> list[tuple[dict, tuple[CpuView, ...]]]:
    if per_cpu:
        return [({"cpu": cpu.cpu}, (cpu,)) for cpu in cpus]
    return [({}, cpus)] if cpus else []


def _cpu_families(families: _Families, cpus: tuple[CpuView, ...], attached: Callable[[str], bool],
                  per_cpu: bool) -> None:
    vectors = sorted({vector for cpu in cpus for vector in cpu.softirq})
    drop_reasons = sorted({reason for cpu in cpus for reason in cpu.drops})
    for labels, group in _cpu_groups(cpus, per_cpu):
        for vector in vectors:
            _softirq(families, {**labels, "vector": vector}, [cpu.vector(vector) for cpu in group])
        devices: dict[str, Counter[str]] = {}
        for cpu in group:
            for device in cpu.napi:
                devices.setdefault(str(device["device"]), Counter()).update(
                    {k: device.get(k, 0) for k in ("polls", "packets", "budget_exhausted")})
        for device, counts in sorted(devices.items()):
            device_labels = {**labels, "device": device}
            families.add(CounterMetricFamily, "napi_polls", "NAPI polls", device_labels, counts["polls"])
            families.add(CounterMetricFamily, "napi_packets", "packets handled by NAPI polls", device_labels,
                         counts["packets"])
            families.add(CounterMetricFamily, "napi_budget_exhausted", "NAPI polls that used their whole budget",
                         device_labels, counts["budget_exhausted"])
        softnet: Counter[str] = Counter()
        for cpu in group:
            softnet.update(cpu.softnet)
        for column, name in SOFTNET_METRICS.items():
            if attached("softnet") or column in softnet:
                families.add(CounterMetricFamily, name.removesuffix("_total"),
                             f"/proc/net/softnet_stat {column} (node_exporter's node_{name})", labels, softnet[column])
        drops: Counter[str] = Counter()
        for cpu in group:
            drops.update(cpu.drops)
        for reason in drop_reasons:
            families.add(CounterMetricFamily, "cpu_drops", "skb drops by reason, on the CPU that dropped them",
                         {**labels, "reason": reason}, drops[reason])


def _softirq(families: _Families, labels: dict, stats: list[dict]) -> None:
    def summed(key: str) -> int:
        return sum(int(s.get(key, 0)) for s in stats)

    def histogram(key: str) -> list[int]:
        width = max((len(s.get(key, [])) for s in stats), default=0)
        return [sum(int(s.get(key, [])[i]) if i < len(s.get(key, [])) else 0 for s in stats) for i in range(width)]

    time_s = summed("time_ns") / 1e9
    families.add(CounterMetricFamily, "softirq_runs", "softirq handler runs", labels, summed("count"))
    families.add(CounterMetricFamily, "softirq_seconds", "time spent in softirq handlers", labels, time_s)
    families.histogram("softirq_latency_seconds", "softirq handler run time, softirq_entry to softirq_exit",
                       labels, log2_ns_buckets(histogram("latency_log2_ns")), sum_value=time_s)
    # Captures from before the kernel kept the delays' sum have none: _sum is left out, not made up.
    has_sum = all("queue_delay_ns" in s for s in stats if s)
    families.histogram("softirq_queue_delay_seconds", QUEUE_DELAY_DESCRIPTION, labels,
                       log2_ns_buckets(histogram("queue_delay_log2_ns"), SOFTIRQ_QUEUE_DELAY_LE_EXPONENTS),
                       sum_value=summed("queue_delay_ns") / 1e9 if has_sum else None)


def named_drop_sites(sites: Iterable[dict], limit: int = MAX_SITE_SERIES) -> list[dict]:
    """The sites that get a series of their own: the busiest `limit`."""
    return sorted(sites, key=lambda s: (-int(s["count"]), s["reason"], s["symbol"]))[:limit]


def _drop_site_families(families: _Families, doc: dict, attached: Callable[[str], bool]) -> None:
    """Drops by where in the kernel they happened. The sites named in the document get a
    series each; every other drop of a reason counts under site="other", so the sites of a
    reason add up to its drops in netprof_drops_total."""
    if "drop_sites" not in doc:
        return
    named = named_drop_sites(doc.get("drop_sites") or [])
    totals: Counter[str] = Counter()
    for pod in ProfileDocument(doc).pods:
        totals.update(pod.drops)
    named_by_reason: Counter[str] = Counter()
    documentation = "skb drops by reason and kernel function that dropped them (function+offset; other: the rest)"
    for site in named:
        named_by_reason[site["reason"]] += int(site["count"])
        families.add(CounterMetricFamily, "drop_site_drops", documentation,
                     {"reason": site["reason"], "site": site["symbol"]}, int(site["count"]))
    for reason in sorted(set(totals) | set(named_by_reason)):
        families.add(CounterMetricFamily, "drop_site_drops", documentation, {"reason": reason, "site": OTHER_SITE},
                     max(0, totals[reason] - named_by_reason[reason]))


def _node_families(families: _Families, doc: dict) -> None:
    kernel = doc.get("kernel") or {}
    families.add(GaugeMetricFamily, "build_info", "netprof's version and the kernel it runs on (always 1)",
                 {"version": __version__, "kernel": kernel.get("release", ""),
                  "btf": str(bool(kernel.get("btf"))).lower(), "schema": doc.get("schema", "")}, 1)
    lost = doc.get("lost_events") or {}
    families.get(CounterMetricFamily, "lost_events",
                 "events the kernel side could not count (a map was full), by map", ["map"])
    for name, count in sorted(lost.items()):
        families.add(CounterMetricFamily, "lost_events",
                     "events the kernel side could not count (a map was full), by map", {"map": name}, count)
    families.get(CounterMetricFamily, "ignored_events", "events seen and deliberately not counted, by kind", ["kind"])
    for name, count in sorted((doc.get("ignored_events") or {}).items()):
        families.add(CounterMetricFamily, "ignored_events", "events seen and deliberately not counted, by kind",
                     {"kind": name}, count)
    for probe in doc.get("probes") or []:
        families.add(GaugeMetricFamily, "probe_attached",
                     "1 when the probe is attached, 0 when not (see the capture for why)",
                     {"probe": probe["name"], "via": probe["via"]}, 1 if probe["attached"] else 0)
    families.add(CounterMetricFamily, "intervals", "sampling intervals read", {}, doc.get("intervals", 0))
    families.add(CounterMetricFamily, "sampled_seconds", "time covered by the sampled intervals", {},
                 doc.get("duration_s", 0.0))


def _tier_families(families: _Families, document: ProfileDocument) -> None:
    """The detail tier (profiler/detail_tier.py), as the capture recorded it: the one answer
    the report and the dashboard show too."""
    tier = document.tier
    families.add(GaugeMetricFamily, "detail_tier",
                 "1 while the detail programs run (full tier), 0 while quiet; mode is what --tier asked",
                 {"mode": tier.mode}, 1 if tier.current == "full" else 0)
    for to, count in (("full", tier.switches_to_full), ("quiet", tier.switches_to_quiet)):
        families.add(CounterMetricFamily, "detail_tier_switches", "switches of the detail tier, by the tier switched to",
                     {"to": to}, count)
    for name, seconds in (("full", tier.full_s), ("quiet", tier.quiet_s)):
        families.add(CounterMetricFamily, "detail_tier_seconds", "sampled time spent in each detail tier",
                     {"tier": name}, seconds)


def _cost_families(families: _Families, cost: dict | None) -> None:
    """What netprof costs: kernel time in its BPF programs (timed during the intervals BPF
    statistics were on, `bpf_timed_seconds`), and its own process."""
    if not cost:
        return
    families.add(CounterMetricFamily, "bpf_timed_seconds",
                 "time BPF run statistics were on (bpf_run_seconds / this = the programs' CPU share)", {},
                 float(cost.get("timed_s", 0.0)))
    for program in cost.get("probes") or []:
        labels = {"program": program["program"], "hook": program["hook"]}
        families.add(CounterMetricFamily, "bpf_run_seconds", "kernel time inside netprof's BPF program, while timed",
                     labels, int(program.get("run_time_ns", 0)) / 1e9)
        families.add(CounterMetricFamily, "bpf_runs", "runs of netprof's BPF program, while timed", labels,
                     int(program.get("events", 0)))
        families.add(CounterMetricFamily, "bpf_recursion_misses",
                     "runs the kernel skipped because another BPF program was running on that CPU (lost events)",
                     labels, int(program.get("recursion_misses", 0)))
    process = cost.get("process") or {}
    for mode in ("user", "system"):
        families.add(CounterMetricFamily, "process_cpu_seconds", "CPU time of the netprof process, by mode",
                     {"mode": mode}, float(process.get(f"{mode}_cpu_s", 0.0)))
    families.add(GaugeMetricFamily, "process_resident_memory_bytes", "resident memory of the netprof process", {},
                 int(process.get("rss_bytes", 0)))


class DocumentCollector(Collector):
    """A prometheus-client collector over whatever profile JSON `document()` returns now."""

    def __init__(self, document: Callable[[], dict], per_cpu: bool = True):
        self._document = document
        self._per_cpu = per_cpu

    def collect(self) -> Iterator[Metric]:
        yield from metric_families(self._document(), per_cpu=self._per_cpu)


def registry_for(document: Callable[[], dict], per_cpu: bool = True) -> CollectorRegistry:
    # auto_describe off: families are only known once a document is there.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DocumentCollector(document, per_cpu))
    return registry


def exposition_text(doc: dict, per_cpu: bool = True) -> str:
    """The Prometheus text exposition (format 0.0.4) of one profile JSON document."""
    return generate_latest(registry_for(lambda: doc, per_cpu)).decode()
