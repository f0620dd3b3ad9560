"""What the dashboard shows, as plain data built from profile JSON documents.

The TUI never sees a BPF map, a Snapshot or a detector: everything on screen is derived here
from the same `netprof.profile/v1` document `netprof profile --json` prints (the window's
capture, with node context and findings) plus the latest interval's document (for the "now"
rates) and a short history of per-interval values (for the sparklines). A replay is the same
thing with one document for both and no history, so a live view and a saved capture render
through one path.

Both documents are made inert here (profiler/inert.py), once, before anything is derived
from them: a replayed capture may come from anyone, and a live one names pods, devices and
the node from files netprof does not control. Every screen, the export key and the clipboard
read the model, so none of them sees a terminal control.
"""
from __future__ import annotations

import collections
import math
from dataclasses import dataclass, field, replace
from collections.abc import Iterator
from typing import Any, Iterable, Mapping

from profiler.document import CpuView, PodView, ProfileDocument
from profiler.inert import inert, inert_tree
from profiler.capture import NETWORK_SOFTIRQS, events_counted  # noqa: F401  (the one definition)
from profiler.system.cpus import format_cpu_list
from profiler.system.irqs import landing_cpus_text

HISTORY_LENGTH = 60
SEVERITY_LABEL = {"critical": "CRIT", "warning": "WARN", "info": "INFO"}
SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}
SPARK_BLOCKS = "▁▂▃▄▅▆▇█"


@dataclass(frozen=True)
class PodRates:
    """One pod's trouble per second over a document's duration."""

    retransmits_per_s: float = 0.0
    drops_per_s: float = 0.0
    top_drops: tuple[tuple[str, float], ...] = ()  # (drop reason, per s), biggest first
    listen_overflows_per_s: float = 0.0
    conntrack_failures_per_s: float = 0.0
    rcvqueue_full_per_s: float = 0.0

    @property
    def trouble_per_s(self) -> float:
        """Everything that went wrong for the pod, per second: what the trend column plots."""
        return (self.retransmits_per_s + self.drops_per_s + self.listen_overflows_per_s
                + self.conntrack_failures_per_s + self.rcvqueue_full_per_s)


@dataclass(frozen=True)
class PodRow:
    netns: int
    name: str
    rates: PodRates
    trend: tuple[float, ...] = ()      # trouble per second, one value per interval, oldest first
    worst_severity: str | None = None  # of the findings naming this pod

    @property
    def key(self) -> str:
        return str(self.netns)


@dataclass(frozen=True)
class NicQueueIrq:
    nic: str
    queue: str   # "rx-0", "tx-3", "combined-7"
    irq: int

    @property
    def label(self) -> str:
        return f"{self.nic} {self.queue} (IRQ {self.irq})"

    @property
    def short(self) -> str:
        return f"{self.nic} {self.queue} ({self.irq})"


@dataclass(frozen=True)
class CpuRow:
    cpu: int
    net_rx_share: float            # of the CPU's time spent in NET_RX softirq, 0..1
    net_tx_share: float
    net_rx_trend: tuple[float, ...] = ()
    napi_polls_per_s: float = 0.0
    budget_exhausted_per_s: float = 0.0  # NAPI polls that used their whole budget
    time_squeeze_per_s: float = 0.0      # softnet: net_rx_action ran out of budget or time
    backlog_drops_per_s: float = 0.0
    # NET_RX handler run time (ns) over the rate window, interpolated in its log2 buckets
    # (profiler/percentiles.py, as the report and Prometheus' histogram_quantile()).
    net_rx_p50_ns: float | None = None
    net_rx_p99_ns: float | None = None
    irqs: tuple[NicQueueIrq, ...] = ()  # NIC queue IRQs whose effective affinity is this CPU
    worst_severity: str | None = None
    # False when the softirq and NAPI programs never ran in the window (the quiet detail tier
    # parks them): the shares, percentiles and NAPI rates above are then unknown, not zero.
    detail_measured: bool = True

    @property
    def key(self) -> str:
        return str(self.cpu)


@dataclass(frozen=True)
class FindingRow:
    key: str
    severity: str
    kind: str
    where: str
    summary: str
    score: float
    data: Mapping[str, Any]  # the finding as it is in the profile JSON


@dataclass(frozen=True)
class HeaderInfo:
    mode: str                     # "live" or "replay"
    node: str
    kernel: str
    probes_attached: int
    probes_total: int
    probes_missing: tuple[tuple[str, str], ...]  # (probe, why not)
    interval_s: float | None      # how often the kernel counters are read (None: unknown)
    events_per_s: float
    window_s: float               # how much capture the findings and details cover
    started_at: float | None      # wall clock of the capture's start
    cost: str | None              # what netprof itself costs, when the capture measured it
    error: str | None = None      # the live feed failed: what the operator should know
    # The detail tier (profile JSON `tier`, profiler/detail_tier.py): in force now, what was
    # asked, and the last switch (wall clock, why).
    tier: str = "full"
    tier_mode: str = "full"
    tier_switched_at: float | None = None
    tier_why: str | None = None


@dataclass(frozen=True)
class DashboardModel:
    sequence: int
    header: HeaderInfo
    findings: tuple[FindingRow, ...]
    pods: tuple[PodRow, ...]
    cpus: tuple[CpuRow, ...]
    rate_window_s: float               # what "per second" in the tables is over
    document: Mapping[str, Any]        # the window's profile JSON: details and export read it
    updated_monotonic_s: float = 0.0

    def pod(self, netns: int) -> PodRow | None:
        return next((pod for pod in self.pods if pod.netns == netns), None)

    def cpu(self, cpu: int) -> CpuRow | None:
        return next((row for row in self.cpus if row.cpu == cpu), None)


# --------------------------------------------------------------------------- rates


def _per_s(count: float, duration_s: float) -> float:
    return count / duration_s if duration_s > 0 else 0.0


def listen_overflows(pod: Mapping[str, Any] | PodView) -> int:
    """The pod's listen overflows as every view counts them (profiler.document.PodView)."""
    return _pod_view(pod).listen_overflows


def conntrack_failures(pod: Mapping[str, Any] | PodView) -> int:
    """Packets or new flows conntrack refused (profiler.document.PodView)."""
    return _pod_view(pod).conntrack_failures


def _pod_view(pod: Mapping[str, Any] | PodView, duration_s: float = 0.0) -> PodView:
    return pod if isinstance(pod, PodView) else PodView(pod, duration_s)


def _cpu_view(cpu: Mapping[str, Any] | CpuView, duration_s: float) -> CpuView:
    return cpu if isinstance(cpu, CpuView) else CpuView(cpu, duration_s)


def pod_rates(pod: Mapping[str, Any] | PodView, duration_s: float) -> PodRates:
    view = _pod_view(pod, duration_s)
    drops = {reason: int(n) for reason, n in view.drops.items() if n}
    top = sorted(drops.items(), key=lambda item: (-item[1], item[0]))
    return PodRates(
        retransmits_per_s=_per_s(view.retransmits, duration_s),
        drops_per_s=_per_s(sum(drops.values()), duration_s),
        top_drops=tuple((reason, _per_s(n, duration_s)) for reason, n in top),
        listen_overflows_per_s=_per_s(view.listen_overflows, duration_s),
        conntrack_failures_per_s=_per_s(view.conntrack_failures, duration_s),
        rcvqueue_full_per_s=_per_s(view.rcvqueue_full, duration_s),
    )


def cpu_row(cpu: Mapping[str, Any] | CpuView, duration_s: float) -> CpuRow:
    """One CPU's network work per second over a document's duration (no trend, IRQs or
    findings: those come from elsewhere)."""
    view = _cpu_view(cpu, duration_s)
    p50, p99 = view.latency_percentiles_ns("NET_RX", (0.5, 0.99))
    napi_s = duration_s if view.detail_s is None else view.detail_s  # NAPI polls are counted in the full tier only
    return CpuRow(
        cpu=view.cpu,
        net_rx_share=view.softirq_share("NET_RX"),
        net_tx_share=view.softirq_share("NET_TX"),
        napi_polls_per_s=_per_s(view.napi_polls, napi_s),
        budget_exhausted_per_s=_per_s(view.napi_budget_exhausted, napi_s),
        time_squeeze_per_s=_per_s(view.time_squeeze, duration_s),
        backlog_drops_per_s=_per_s(view.backlog_drops, duration_s),
        net_rx_p50_ns=p50,
        net_rx_p99_ns=p99,
        detail_measured=view.detail_ran,
    )


def softirq_share(cpu: Mapping[str, Any] | CpuView, vector: str, duration_s: float) -> float:
    return _cpu_view(cpu, duration_s).softirq_share(vector)


def queue_irq_affinities(node: Mapping[str, Any] | None) -> Iterator[tuple[dict, dict, str, frozenset[int]]]:
    """(nic, queue, CPU list text, its CPUs) for every NIC queue IRQ in a capture's node
    section: where its interrupts land (profiler.system.irqs.landing_cpus: the effective
    affinity unless a write is still pending)."""
    for nic in (node or {}).get("nics") or ():
        for queue in nic.get("queues") or ():
            if queue.get("irq") is None:
                continue
            try:
                cpus = landing_cpus_text(queue.get("affinity"), queue.get("effective_affinity"))
            except ValueError:
                continue
            yield nic, queue, format_cpu_list(cpus), cpus


def irqs_by_cpu(node: Mapping[str, Any] | None) -> dict[int, tuple[NicQueueIrq, ...]]:
    """NIC queue IRQs by the CPU they run on (their effective affinity when it is one CPU)."""
    pinned: dict[int, list[NicQueueIrq]] = collections.defaultdict(list)
    for nic, queue, _text, cpus in queue_irq_affinities(node):
        if len(cpus) == 1:
            pinned[next(iter(cpus))].append(NicQueueIrq(
                str(nic.get("name", "?")), f"{queue.get('kind', '?')}-{queue.get('index', '?')}", int(queue["irq"])))
    return {cpu: tuple(labels) for cpu, labels in pinned.items()}


# --------------------------------------------------------------------------- history


@dataclass(frozen=True)
class HistoryView:
    pods: Mapping[int, tuple[float, ...]] = field(default_factory=dict)
    cpus: Mapping[int, tuple[float, ...]] = field(default_factory=dict)


class History:
    """Per-interval values for the sparklines: trouble/s per pod, NET_RX share per CPU.

    One writer (the sampling thread) pushes the document of each interval; `view()` hands an
    immutable copy to whoever builds the model. A pod missing from an interval's document
    (its netns is gone) loses its history.
    """

    def __init__(self, length: int = HISTORY_LENGTH):
        self.length = length
        self._pods: dict[int, collections.deque[float]] = {}
        self._cpus: dict[int, collections.deque[float]] = {}

    def push(self, interval_doc: Mapping[str, Any]) -> None:
        document = ProfileDocument(interval_doc)
        seen: set[int] = set()
        for pod in document.pods:
            seen.add(pod.netns)
            series = self._pods.setdefault(pod.netns, collections.deque(maxlen=self.length))
            series.append(pod_rates(pod, document.duration_s).trouble_per_s)
        for netns in set(self._pods) - seen:
            del self._pods[netns]
        for cpu in document.cpus:
            series = self._cpus.setdefault(cpu.cpu, collections.deque(maxlen=self.length))
            series.append(cpu.softirq_share("NET_RX"))

    def view(self) -> HistoryView:
        return HistoryView(pods={k: tuple(v) for k, v in self._pods.items()},
                           cpus={k: tuple(v) for k, v in self._cpus.items()})


# --------------------------------------------------------------------------- the model


def where(finding: Mapping[str, Any]) -> str:
    if finding.get("pod"):
        return str(finding["pod"])
    if finding.get("cpu") is not None:
        return f"CPU {finding['cpu']}"
    return "node"


def finding_key(finding: Mapping[str, Any]) -> str:
    """Stable across updates, so a finding keeps its row (and the cursor) while it lasts."""
    return f"{finding.get('kind')}|{finding.get('pod') or ''}|{finding.get('cpu')}"


def _worse(a: str | None, b: str) -> str:
    return b if a is None or SEVERITY_RANK.get(b, 9) < SEVERITY_RANK.get(a, 9) else a


def cost_summary(cost: Any) -> str | None:
    """One line for the header from the capture's `cost` section (profiler/cost.py): kernel
    time in netprof's BPF programs and netprof's own process, in % of one CPU as `top` shows."""
    if not isinstance(cost, Mapping) or not cost:
        return None
    parts: list[str] = []
    bpf = _first_number(cost.get("bpf") or {}, ("cpu_percent",))
    if bpf is not None:
        parts.append(f"BPF {bpf:.1f}%")
    process = cost.get("process") or {}
    own = _first_number(process, ("cpu_percent",))
    if own is not None:
        parts.append(f"netprof {own:.1f}% CPU")
    rss = _first_number(process, ("rss_bytes",))
    if rss is not None:
        parts.append(f"{rss / 2**20:.0f} MiB")
    return ", ".join(parts) if parts else "measured (i)"


def _first_number(data: Any, keys: Iterable[str]) -> float | None:
    if not isinstance(data, Mapping):
        return None
    for key in keys:
        value = data.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
    return None


def _tier_fields(document: ProfileDocument) -> dict[str, Any]:
    tier = document.tier
    last = tier.last_switch or {}
    at = last.get("at")
    return {"tier": tier.current, "tier_mode": tier.mode,
            "tier_switched_at": float(at) if isinstance(at, (int, float)) else None,
            "tier_why": str(last["why"]) if last.get("why") else None}


def build_model(document: Mapping[str, Any], interval_doc: Mapping[str, Any] | None = None,
                history: HistoryView | None = None, *, mode: str = "replay",
                interval_s: float | None = None, sequence: int = 0, updated_monotonic_s: float = 0.0,
                error: str | None = None) -> DashboardModel:
    """The dashboard for a window's profile JSON; rates from `interval_doc` (the latest
    interval; the window itself when None, as in a replay)."""
    document = inert_tree(document)
    recent = inert_tree(interval_doc) if interval_doc is not None else document
    history = history or HistoryView()
    rate_s = float(recent.get("duration_s") or 0.0)

    findings = tuple(
        FindingRow(key=finding_key(f), severity=f.get("severity", "info"), kind=f.get("kind", "?"),
                   where=where(f), summary=f.get("summary", ""), score=float(f.get("score", 0.0)), data=f)
        for f in document.get("findings") or ()
    )
    pod_severity: dict[str, str] = {}
    cpu_severity: dict[int, str] = {}
    for f in findings:
        if f.data.get("pod"):
            pod_severity[f.data["pod"]] = _worse(pod_severity.get(f.data["pod"]), f.severity)
        if f.data.get("cpu") is not None:
            cpu_severity[int(f.data["cpu"])] = _worse(cpu_severity.get(int(f.data["cpu"])), f.severity)

    now = ProfileDocument(recent)
    pods = tuple(
        PodRow(netns=p.netns, name=p.name, rates=pod_rates(p, rate_s),
               trend=history.pods.get(p.netns, ()), worst_severity=pod_severity.get(p.name))
        for p in now.pods
    )

    pinned = irqs_by_cpu(document.get("node"))
    cpus = [replace(cpu_row(c, rate_s), net_rx_trend=history.cpus.get(c.cpu, ()),
                    irqs=pinned.get(c.cpu, ()), worst_severity=cpu_severity.get(c.cpu))
            for c in now.cpus]
    # CPUs with nothing to show still belong in an imbalance picture.
    seen = {row.cpu for row in cpus}
    for number in sorted(pinned):
        if number not in seen:
            cpus.append(CpuRow(cpu=number, net_rx_share=0.0, net_tx_share=0.0, irqs=pinned[number],
                               detail_measured=now.tier.detail_ran))
    cpus.sort(key=lambda row: row.cpu)

    probes = document.get("probes") or ()
    node = document.get("node") or {}
    header = HeaderInfo(
        mode=mode,
        node=str(node.get("hostname") or "?"),
        kernel=str((document.get("kernel") or {}).get("release") or node.get("kernel_release") or "?"),
        probes_attached=sum(1 for p in probes if p.get("attached")),
        probes_total=len(probes),
        probes_missing=tuple((str(p.get("name")), str(p.get("error") or "not attached"))
                             for p in probes if not p.get("attached")),
        interval_s=interval_s,
        events_per_s=_per_s(events_counted(recent), rate_s),
        window_s=float(document.get("duration_s") or 0.0),
        started_at=document.get("started_at"),
        cost=cost_summary(document.get("cost")),
        error=None if error is None else inert(error),  # an exception's text may quote outside text
        **_tier_fields(ProfileDocument(document)),
    )
    return DashboardModel(sequence=sequence, header=header, findings=findings, pods=pods, cpus=tuple(cpus),
                          rate_window_s=rate_s, document=document, updated_monotonic_s=updated_monotonic_s)


# --------------------------------------------------------------------------- baseline


@dataclass(frozen=True)
class BaselineView:
    """What the tables compare against after `b`: the window the screen showed then, as
    rates, and what changed since beyond noise (profiler.analysis.diff, `netprof diff`'s own
    judgement, so the TUI and the command never disagree)."""

    marked_at: float                      # wall clock
    reason: str                           # "marked" (b), or why it was set ("fix applied …")
    pods: Mapping[int, PodRates]          # by netns inode: one live session keeps its inodes
    cpus: Mapping[int, CpuRow]
    worse: int                            # figures that rose beyond noise since
    better: int
    headline: str | None                  # the most certain change, in words

    def pod(self, netns: int) -> PodRates:
        return self.pods.get(netns, PodRates())

    def cpu(self, cpu: int) -> CpuRow:
        return self.cpus.get(cpu, CpuRow(cpu=cpu, net_rx_share=0.0, net_tx_share=0.0))


def baseline_view(baseline: Mapping[str, Any], now: Mapping[str, Any], marked_at: float,
                  reason: str = "marked") -> BaselineView:
    """`baseline` and `now` are window documents (the model's `document`)."""
    from profiler.analysis.diff import diff_captures

    before = ProfileDocument(baseline)
    pods = {p.netns: pod_rates(p, before.duration_s) for p in before.pods}
    cpus = {c.cpu: cpu_row(c, before.duration_s) for c in before.cpus}
    diff = diff_captures(baseline, now)
    worse = sum(1 for change in diff.changes if change.direction == "worse")
    headline = None
    if diff.changes:
        top = diff.changes[0]
        headline = f"{top.direction}: {top.group} {top.subject} {top.metric}"
    return BaselineView(marked_at, reason, pods, cpus, worse, len(diff.changes) - worse, headline)


def format_share_delta(delta: float) -> str:
    """A signed change of a CPU share, in points of that CPU's time: '+31%', '−5%', '·'."""
    points = round(100 * delta)
    if points == 0:
        return "·"
    return f"+{points}%" if points > 0 else f"−{-points}%"


def format_delta(delta: float) -> str:
    """A signed change of a rate for a table cell: '+12', '−0.4', '·' when it is (near) none."""
    if abs(delta) < 0.05:
        return "·"
    sign = "+" if delta > 0 else "−"
    return sign + format_rate(abs(delta))


# --------------------------------------------------------------------------- text forms


def sparkline(values: Iterable[float], width: int, top: float | None = None) -> str:
    """The last `width` values as block characters, right-aligned; zero is a blank, so a quiet
    pod shows nothing. `top` fixes the scale (a share: 1.0); otherwise the series' own peak."""
    series = list(values)[-width:] if width > 0 else []
    if not series:
        return " " * max(width, 0)
    peak = top if top is not None else max(series)
    chars = []
    for value in series:
        if value <= 0 or peak <= 0:
            chars.append(" ")
            continue
        # Eighths, rounded up: any non-zero value shows at least the lowest block.
        level = math.ceil(min(1.0, value / peak) * len(SPARK_BLOCKS)) - 1
        chars.append(SPARK_BLOCKS[max(0, level)])
    return "".join(chars).rjust(width)


def format_rate(per_s: float) -> str:
    """Compact events/s for a table cell: '', 0.3, 12, 4.2k, 1.3M."""
    if per_s <= 0:
        return "·"
    if per_s < 10:
        return f"{per_s:.1f}"
    if per_s < 10_000:
        return f"{per_s:.0f}"
    if per_s < 10_000_000:
        return f"{per_s / 1000:.1f}k" if per_s < 100_000 else f"{per_s / 1000:.0f}k"
    return f"{per_s / 1e6:.1f}M"


NOT_MEASURED = "–"  # a figure the quiet detail tier did not measure (never shown as 0)


def format_share(share: float) -> str:
    if share <= 0:
        return "·"
    if share < 0.001:
        return "<0.1%"
    return f"{100 * share:.0f}%" if share >= 0.1 else f"{100 * share:.1f}%"


def format_ns(ns: float) -> str:
    if ns < 1000:
        return f"{ns:.0f}ns"
    if ns < 1e6:
        return f"{ns / 1e3:.0f}µs" if ns >= 1e4 else f"{ns / 1e3:.1f}µs"
    if ns < 1e9:
        return f"{ns / 1e6:.0f}ms" if ns >= 1e7 else f"{ns / 1e6:.1f}ms"
    return f"{ns / 1e9:.1f}s"


def log2_buckets(histogram: Iterable[int]) -> list[tuple[str, int]]:
    """Non-empty span of a log2 histogram (bucket i: [2^i, 2^(i+1)) ns) as (label, count)."""
    counts = list(histogram)
    used = [i for i, n in enumerate(counts) if n]
    if not used:
        return []
    return [(f"{format_ns(2 ** i)}–{format_ns(2 ** (i + 1))}", counts[i]) for i in range(used[0], used[-1] + 1)]
