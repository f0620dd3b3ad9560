"""The one typed reader of a profile document (`netprof.profile/v1`, the JSON a capture is
saved as and every view is rendered from).

The detectors, the report, the dashboard, the Prometheus export, the fix planner and `netprof
diff` read per-pod, per-listener and per-CPU figures through this module, so they count one
thing one way: a pod's listen overflows, a CPU's share of time in NET_RX, a softirq p99 are
defined here once. Views wrap the document's dicts without copying them (building a
ProfileDocument costs nothing until a figure is asked for); a document made inert first
(profiler/inert.py) stays inert through them.

Layering: this module sits above the capture (it reads what the capture writes) and below
analysis and the views; it imports neither.
"""
from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from .percentiles import PERCENTILES, log2_percentiles_ns

SCHEMA = "netprof.profile/v1"
# conntrack statistics that mean a packet or a new flow was refused.
CONNTRACK_FAILURE_STATS = ("drop", "insert_failed")
LISTEN_OVERFLOWS = "TcpExt.ListenOverflows"

Raw = Mapping[str, Any]


def _per_s(count: float, duration_s: float) -> float:
    return count / duration_s if duration_s > 0 else 0.0


@dataclass(frozen=True)
class ListenerView:
    """One listening socket of a pod, as the listen source reported it."""

    raw: Raw

    @property
    def address(self) -> str:
        return str(self.raw.get("address", ""))

    @property
    def port(self) -> int:
        return int(self.raw.get("port", 0))

    @property
    def label(self) -> str:
        """"address:port", as every view names a listener."""
        return f"{self.raw.get('address')}:{self.raw.get('port')}"

    @property
    def overflow_drops(self) -> int:
        """TCP_LISTEN_OVERFLOW drops charged to this listener."""
        return int(self.raw.get("overflow_drops", 0))

    @property
    def listen_overflows(self) -> int:
        """Its listen overflows: the drops charged to it (the netns counter is per pod)."""
        return self.overflow_drops

    @property
    def samples_full(self) -> int:
        return int(self.raw.get("samples_full", 0))

    @property
    def accept_queue_peak(self) -> int:
        return int(self.raw.get("accept_queue_peak", 0))

    @property
    def accept_queue_limit(self) -> int:
        return int(self.raw.get("accept_queue_limit", 0))

    @property
    def requested_backlog(self) -> int | None:
        return self.raw.get("requested_backlog")

    @property
    def somaxconn(self) -> int | None:
        return self.raw.get("somaxconn")

    def reported(self, name: str) -> Any:
        """A field as the listen source reported it, None when it did not (evidence quotes what
        was seen, not a default)."""
        return self.raw.get(name)

    @property
    def fill(self) -> float:
        """Peak / limit (0 when the limit is unknown)."""
        return self.accept_queue_peak / max(1, self.accept_queue_limit)

    @property
    def under_pressure(self) -> bool:
        """Overflowed, sampled full, or peaked at its limit: what the report lists."""
        return bool(self.overflow_drops or self.samples_full
                    or self.accept_queue_peak >= max(1, self.accept_queue_limit))

    @property
    def fill_ratio_counts(self) -> tuple[int, ...] | None:
        """Samples of depth / limit in the buckets of profiler.system.listeners.FILL_RATIO_BOUNDS
        (None in captures from before they were kept)."""
        counts = self.raw.get("accept_queue_fill_ratio")
        return None if counts is None else tuple(int(c) for c in counts)

    @property
    def fill_ratio_sum(self) -> float:
        return float(self.raw.get("accept_queue_fill_ratio_sum", 0.0))

    @property
    def depth_log2(self) -> tuple[int, ...]:
        return tuple(int(c) for c in self.raw.get("accept_queue_depth_log2") or ())


@dataclass(frozen=True)
class PodView:
    """One pod (network namespace) over the document's duration."""

    raw: Raw
    duration_s: float

    @property
    def name(self) -> str:
        return str(self.raw.get("pod", ""))

    @property
    def netns(self) -> int:
        return int(self.raw.get("netns", -1))

    @property
    def kubernetes(self) -> Raw:
        return self.raw.get("kubernetes") or {}

    @property
    def retransmits(self) -> int:
        """Retransmitted skbs (tcp_retransmit_skb hits)."""
        return int(self.raw.get("retransmits", 0))

    @property
    def retransmitted_segments(self) -> int:
        """MSS segments in the retransmitted skbs (0 in captures from before they were kept)."""
        return int(self.raw.get("retransmitted_segments", 0))

    @property
    def retransmitted_segments_or_skbs(self) -> int:
        """Segments retransmitted; the skb count where segments are missing or 0 (older captures)."""
        return int(self.raw.get("retransmitted_segments") or self.raw.get("retransmits", 0))

    @property
    def drops(self) -> Raw:
        """skb drops by reason."""
        return self.raw.get("drops") or {}

    def drop_count(self, reason: str) -> int:
        return int(self.drops.get(reason, 0))

    @property
    def drops_total(self) -> int:
        return sum(int(n) for n in self.drops.values())

    @property
    def netstat(self) -> Raw:
        return self.raw.get("netstat") or {}

    def counter(self, name: str, default: int = 0) -> int:
        """A netstat/snmp counter of the pod's netns ("TcpExt.ListenOverflows")."""
        return int(self.netstat.get(name, default))

    @property
    def conntrack(self) -> Raw:
        return self.raw.get("conntrack") or {}

    @property
    def rcvqueue_full(self) -> int:
        return int(self.raw.get("rcvqueue_full", 0))

    @cached_property
    def listeners(self) -> tuple[ListenerView, ...]:
        return tuple(ListenerView(listener) for listener in self.raw.get("listen") or ())

    @property
    def listen_overflow_drops(self) -> int:
        """TCP_LISTEN_OVERFLOW drops over the pod's listeners."""
        return sum(listener.overflow_drops for listener in self.listeners)

    @property
    def listen_overflows(self) -> int:
        """The pod's listen overflows: the larger of its netns' ListenOverflows counter and the
        overflow drops charged to its listeners. Each may miss some: a SYN refused for a full
        queue is consumed, not dropped with a reason (the counter sees more); a counter read
        from a netns that went away mid-interval misses its last increments (the drops see
        them). The two count the same events, so they are not added."""
        return max(self.counter(LISTEN_OVERFLOWS), self.listen_overflow_drops)

    @property
    def conntrack_failures(self) -> int:
        """Packets or new flows conntrack refused. A failed insert usually drops the packet, so
        `drop` and `insert_failed` count the same event twice; since 5.x a UDP clash is
        resolved instead (insert_failed without drop): the larger of the two."""
        return max((int(self.conntrack.get(stat, 0)) for stat in CONNTRACK_FAILURE_STATS), default=0)

    def per_s(self, count: float) -> float:
        return _per_s(count, self.duration_s)


@dataclass(frozen=True)
class CpuView:
    """One CPU's network work over the document's duration."""

    raw: Raw
    duration_s: float
    # Seconds the detail programs (softirq, NAPI) ran: the full tier's share of the capture
    # (`tier`, profiler/detail_tier.py). None: all of duration_s.
    detail_s: float | None = None

    @property
    def detail_ran(self) -> bool:
        """Whether the softirq and NAPI programs ran in any of the window (not parked by
        the quiet tier throughout): if not, their figures are unknown, not zero."""
        return self.detail_s is None or self.detail_s > 0

    @property
    def cpu(self) -> int:
        return int(self.raw["cpu"])

    @property
    def softirq(self) -> Raw:
        return self.raw.get("softirq") or {}

    def vector(self, vector: str) -> Raw:
        return self.softirq.get(vector) or {}

    def softirq_count(self, vector: str) -> int:
        return int(self.vector(vector).get("count", 0))

    def softirq_time_ns(self, vector: str) -> int:
        return int(self.vector(vector).get("time_ns", 0))

    def softirq_share(self, vector: str) -> float:
        """Share of the CPU's time in this softirq vector, 0..1 (0 over no time), over the
        time the softirq program ran (a quiet tier's seconds are not idle seconds)."""
        seconds = self.duration_s if self.detail_s is None else self.detail_s
        if seconds <= 0:
            return 0.0
        return min(1.0, self.softirq_time_ns(vector) / (seconds * 1e9))

    def latency_log2_ns(self, vector: str) -> list[int]:
        return [int(c) for c in self.vector(vector).get("latency_log2_ns") or ()]

    def queue_delay_log2_ns(self, vector: str) -> list[int]:
        return [int(c) for c in self.vector(vector).get("queue_delay_log2_ns") or ()]

    def queue_delay_sample_every(self, vector: str) -> int:
        """The queue-delay histogram holds 1 handler run in this many (captures from before
        the sampling measured every run)."""
        return int(self.vector(vector).get("queue_delay_sample_every", 1))

    def latency_percentiles_ns(self, vector: str,
                               quantiles: Sequence[float] = PERCENTILES) -> list[float | None]:
        """Handler run-time percentiles (ns), interpolated in the log2 buckets
        (profiler/percentiles.py); None where the histogram is empty."""
        return log2_percentiles_ns(self.latency_log2_ns(vector), quantiles)

    @property
    def napi(self) -> tuple[Raw, ...]:
        return tuple(self.raw.get("napi") or ())

    @property
    def napi_polls(self) -> int:
        return sum(int(d.get("polls", 0)) for d in self.napi)

    @property
    def napi_budget_exhausted(self) -> int:
        return sum(int(d.get("budget_exhausted", 0)) for d in self.napi)

    @property
    def softnet(self) -> Raw:
        return self.raw.get("softnet") or {}

    @property
    def softnet_dropped(self) -> int:
        """softnet_stat's `dropped`: packets dropped because this CPU's input backlog was full."""
        return int(self.softnet.get("dropped", 0))

    def drop_count(self, reason: str) -> int:
        """skb drops of a reason on this CPU (charged to the CPU that tried to enqueue)."""
        return int(self.drops.get(reason, 0))

    @property
    def time_squeeze(self) -> int:
        return int(self.softnet.get("time_squeeze", 0))

    @property
    def drops(self) -> Raw:
        return self.raw.get("drops") or {}

    @property
    def backlog_drops(self) -> int:
        """Packets dropped at this CPU's input backlog: softnet_stat's count (it charges the CPU
        whose backlog was full) when read, the CPU_BACKLOG drop reason otherwise."""
        return int(self.softnet.get("dropped", self.drops.get("CPU_BACKLOG", 0)))

    def per_s(self, count: float) -> float:
        return _per_s(count, self.duration_s)

    def detail_per_s(self, count: float) -> float:
        """A count of a detail program (NAPI polls) per second of the time it ran."""
        return _per_s(count, self.duration_s if self.detail_s is None else self.detail_s)


@dataclass(frozen=True)
class TierView:
    """The detail tier over the capture (profile JSON `tier`; profiler/detail_tier.py). A
    document from before tiers ran everything, always: full, never switched."""

    raw: Raw
    duration_s: float

    @property
    def mode(self) -> str:
        return str(self.raw.get("mode") or "full")

    @property
    def current(self) -> str:
        return str(self.raw.get("current") or "full")

    @property
    def full_s(self) -> float:
        return float(self.raw.get("full_s", self.duration_s) or 0.0)

    @property
    def quiet_s(self) -> float:
        return float(self.raw.get("quiet_s") or 0.0)

    @property
    def switches_to_full(self) -> int:
        return int(self.raw.get("switches_to_full") or 0)

    @property
    def switches_to_quiet(self) -> int:
        return int(self.raw.get("switches_to_quiet") or 0)

    @property
    def switches(self) -> list[Raw]:
        return list(self.raw.get("switches") or ())

    @property
    def last_switch(self) -> Raw | None:
        switches = self.switches
        return switches[-1] if switches else None

    @property
    def detail_s(self) -> float | None:
        """Seconds the detail programs ran, where that is not the whole capture (None)."""
        return self.full_s if self.quiet_s > 0 else None

    @property
    def detail_ran(self) -> bool:
        """Whether the detail programs ran in any of the capture (CpuView.detail_ran)."""
        return self.detail_s is None or self.detail_s > 0


class ProfileDocument:
    """Typed, read-only access to one profile document. Cheap to build: it wraps the dict."""

    def __init__(self, doc: Raw):
        self.raw = doc

    @classmethod
    def from_capture(cls, capture: Any) -> ProfileDocument:
        """From a profiler.capture.Capture (anything with to_json())."""
        return cls(capture.to_json())

    @property
    def schema(self) -> str:
        return str(self.raw.get("schema", ""))

    @property
    def duration_s(self) -> float:
        return float(self.raw.get("duration_s") or 0.0)

    def per_s(self, count: float) -> float:
        """A count over the document's duration, per second (0 over no time)."""
        return _per_s(count, self.duration_s)

    @cached_property
    def pods(self) -> tuple[PodView, ...]:
        return tuple(PodView(pod, self.duration_s) for pod in self.raw.get("pods") or ())

    def pod(self, netns: int) -> PodView | None:
        return next((pod for pod in self.pods if pod.netns == netns), None)

    def pod_named(self, name: str) -> PodView | None:
        return next((pod for pod in self.pods if pod.name == name), None)

    def listeners(self) -> Iterator[tuple[PodView, ListenerView]]:
        for pod in self.pods:
            for listener in pod.listeners:
                yield pod, listener

    @cached_property
    def cpus(self) -> tuple[CpuView, ...]:
        detail_s = self.tier.detail_s
        return tuple(CpuView(cpu, self.duration_s, detail_s) for cpu in self.raw.get("cpus") or ())

    @cached_property
    def tier(self) -> TierView:
        return TierView(self.raw.get("tier") or {}, self.duration_s)

    def cpu(self, number: int) -> CpuView | None:
        return next((cpu for cpu in self.cpus if cpu.cpu == number), None)

    @property
    def flows(self) -> list[Raw]:
        return list(self.raw.get("flows") or ())

    def flows_of(self, netns: int) -> list[Raw]:
        return [flow for flow in self.flows if int(flow.get("netns", -1)) == netns]

    @property
    def flow_drops(self) -> list[Raw]:
        return list(self.raw.get("flow_drops") or ())

    @property
    def drop_sites(self) -> list[Raw]:
        return list(self.raw.get("drop_sites") or ())

    # --- node context

    @property
    def node(self) -> Raw:
        return self.raw.get("node") or {}

    @property
    def sysctls(self) -> Raw:
        return self.node.get("sysctls") or {}

    def sysctl_int(self, key: str) -> int | None:
        """A node sysctl as an integer; None when missing or not a number."""
        return _int(self.sysctls.get(key))

    def pod_sysctl(self, pod: PodView | int, key: str) -> str | None:
        """A per-netns sysctl of a pod, as read in its netns."""
        netns = pod.netns if isinstance(pod, PodView) else pod
        return (self.node.get("pod_sysctls") or {}).get(str(netns), {}).get(key)

    @property
    def nics(self) -> list[Raw]:
        return list(self.node.get("nics") or ())

    # --- findings

    @property
    def findings(self) -> list[Raw]:
        """The findings stored with the document, ranked as they were stored."""
        return list(self.raw.get("findings") or ())

    def findings_for_pod(self, name: str) -> list[Raw]:
        return [f for f in self.findings if f.get("pod") == name]

    def findings_for_cpu(self, number: int) -> list[Raw]:
        return [f for f in self.findings if f.get("cpu") == number]


def _int(text: Any) -> int | None:
    try:
        return int(text) if text is not None else None
    except (TypeError, ValueError):
        return None
