"""One immutable record per sampling interval: what changed, attributed to pods and CPUs.

Everything downstream (capture totals, the report, the TUI, detectors) reads these and
nothing else; none of it knows about BPF maps. Sources fill a `SnapshotFrame` during one
interval; the frame is frozen into a `Snapshot`.

Counters here are deltas over the interval. Fields that are levels, not counters (a
listener's queue depth and limit), say so in their name (`_peak`, `_limit`).
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Callable, Mapping, NamedTuple

EMPTY: Mapping[str, int] = MappingProxyType({})
# The address of a listener known only by its port: one that closed before it was sampled,
# or the listeners of pods gone from the totals (profiler.capture), kept by port alone.
UNKNOWN_LISTENER_ADDRESS = "*"


class ListenerPort(NamedTuple):
    """A listening port in one network namespace: how the kernel side counts listen drops."""

    netns: int
    port: int


@dataclass(frozen=True)
class FlowKey:
    netns: int
    family: int
    saddr: str
    sport: int
    daddr: str
    dport: int


@dataclass(frozen=True)
class FlowRetransmits:
    pod: str
    flow: FlowKey
    state: str
    retransmits: int
    segments: int


@dataclass(frozen=True)
class Listener:
    """One listening socket in one pod, as seen during an interval."""

    address: str
    port: int
    accept_queue_peak: int = 0        # most connections waiting for accept() in any sample
    accept_queue_limit: int = 0       # the kernel's limit: min(listen() backlog, somaxconn)
    requested_backlog: int | None = None  # what the application passed to listen(), if seen
    somaxconn: int | None = None      # the pod netns' net.core.somaxconn
    overflow_drops: int = 0           # TCP_LISTEN_OVERFLOW drops attributed to this socket
    samples_full: int = 0             # samples in which the queue was at its limit
    # Samples by accept-queue depth: bucket 0 empty, bucket i >= 1 depth in [2^(i-1), 2^i).
    accept_queue_depth_log2: tuple[int, ...] = ()
    # The same samples by depth / limit over profiler.system.listeners.FILL_RATIO_BOUNDS
    # (count i: ratios in (bound i-1, bound i], the last above every bound), and their sum.
    accept_queue_fill_ratio: tuple[int, ...] = ()
    accept_queue_fill_ratio_sum: float = 0.0
    # SYNs refused on the SYN path (no drop reason; kprobe listen_syn_path, where attached):
    # because the accept queue was full, and because the SYN queue was (syncookies off).
    syn_drops_accept_queue_full: int = 0
    syn_drops_syn_queue_full: int = 0

    def merge(self, other: "Listener") -> "Listener":
        return Listener(
            address=self.address,
            port=self.port,
            accept_queue_peak=max(self.accept_queue_peak, other.accept_queue_peak),
            accept_queue_limit=other.accept_queue_limit or self.accept_queue_limit,
            requested_backlog=other.requested_backlog if other.requested_backlog is not None else self.requested_backlog,
            somaxconn=other.somaxconn if other.somaxconn is not None else self.somaxconn,
            overflow_drops=self.overflow_drops + other.overflow_drops,
            samples_full=self.samples_full + other.samples_full,
            accept_queue_depth_log2=_add_hist(self.accept_queue_depth_log2, other.accept_queue_depth_log2),
            accept_queue_fill_ratio=_add_hist(self.accept_queue_fill_ratio, other.accept_queue_fill_ratio),
            accept_queue_fill_ratio_sum=self.accept_queue_fill_ratio_sum + other.accept_queue_fill_ratio_sum,
            syn_drops_accept_queue_full=self.syn_drops_accept_queue_full + other.syn_drops_accept_queue_full,
            syn_drops_syn_queue_full=self.syn_drops_syn_queue_full + other.syn_drops_syn_queue_full,
        )

    def to_json(self) -> dict:
        return {
            "address": self.address, "port": self.port,
            "accept_queue_peak": self.accept_queue_peak,
            "accept_queue_limit": self.accept_queue_limit,
            "requested_backlog": self.requested_backlog, "somaxconn": self.somaxconn,
            "overflow_drops": self.overflow_drops, "samples_full": self.samples_full,
            "accept_queue_depth_log2": list(self.accept_queue_depth_log2),
            "accept_queue_fill_ratio": list(self.accept_queue_fill_ratio),
            "accept_queue_fill_ratio_sum": round(self.accept_queue_fill_ratio_sum, 6),
            "syn_drops_accept_queue_full": self.syn_drops_accept_queue_full,
            "syn_drops_syn_queue_full": self.syn_drops_syn_queue_full,
        }


@dataclass(frozen=True)
class PodInterval:
    pod: str
    netns: int
    retransmits: int = 0              # retransmitted skbs
    retransmitted_segments: int = 0   # MSS segments in them (nstat's TcpRetransSegs)
    drops: Mapping[str, int] = field(default_factory=lambda: EMPTY)  # skb drops by kernel drop reason name
    rcvqueue_full: int = 0            # sock:sock_rcvqueue_full events (socket receive buffer full)
    netstat: Mapping[str, int] = field(default_factory=lambda: EMPTY)  # the netns' own SNMP/netstat counter deltas
    conntrack: Mapping[str, int] = field(default_factory=lambda: EMPTY)  # per-netns conntrack statistics deltas
    listeners: tuple[Listener, ...] = ()

# The BPF program measures queue delay on one handler run in this many per CPU and vector
# (bpf/softirq.bpf.c says why): the histogram's shape and mean hold, its count is ≈ runs / this.
QUEUE_DELAY_SAMPLE_EVERY = 8
QUEUE_DELAY_DESCRIPTION = ("delay from softirq_raise to softirq_entry, on a sample of the handler runs "
                           "(1 in the capture's queue_delay_sample_every)")


@dataclass(frozen=True)
class SoftirqVector:
    """One softirq vector on one CPU over an interval."""

    count: int = 0
    time_ns: int = 0
    # log2 histogram of handler run time: bucket i counts runs in [2^i, 2^(i+1)) ns.
    latency_log2_ns: tuple[int, ...] = ()
    # log2 histogram of raise → entry delay (time the work waited to run), sampled runs only.
    queue_delay_log2_ns: tuple[int, ...] = ()
    queue_delay_ns: int = 0   # the kernel's sum of the delays in queue_delay_log2_ns

    def merge(self, other: "SoftirqVector") -> "SoftirqVector":
        return SoftirqVector(
            self.count + other.count,
            self.time_ns + other.time_ns,
            _add_hist(self.latency_log2_ns, other.latency_log2_ns),
            _add_hist(self.queue_delay_log2_ns, other.queue_delay_log2_ns),
            self.queue_delay_ns + other.queue_delay_ns,
        )


@dataclass(frozen=True)
class NapiDevice:
    """NAPI polls of one device on one CPU over an interval."""

    device: str
    polls: int = 0
    packets: int = 0
    budget_exhausted: int = 0  # polls where work == budget: the device had more to give

    def merge(self, other: "NapiDevice") -> "NapiDevice":
        return NapiDevice(self.device, self.polls + other.polls, self.packets + other.packets,
                          self.budget_exhausted + other.budget_exhausted)


@dataclass(frozen=True)
class CpuInterval:
    cpu: int
    softirq: Mapping[str, SoftirqVector] = field(default_factory=lambda: EMPTY)  # by vector name (NET_RX, …)
    napi: tuple[NapiDevice, ...] = ()
    softnet: Mapping[str, int] = field(default_factory=lambda: EMPTY)  # /proc/net/softnet_stat deltas: processed, dropped, …
    drops: Mapping[str, int] = field(default_factory=lambda: EMPTY)    # skb drops by reason, on the CPU that dropped them


@dataclass(frozen=True)
class DropSite:
    """Where in the kernel skbs were dropped, for the top sites."""

    reason: str
    symbol: str  # kernel function (+offset) from /proc/kallsyms
    count: int


@dataclass(frozen=True)
class FlowDrops:
    """TCP packets of one flow dropped at one kernel site for one reason. `netns` and `pod`
    say where the packet was dropped (a bridge, the node, the peer), which need not be the
    pod the flow belongs to: that is the point of keeping it."""

    pod: str
    flow: FlowKey      # the dropped packet's own addresses; flow.netns = where it was dropped
    reason: str
    symbol: str        # kernel function (+offset) that dropped it
    count: int


@dataclass(frozen=True)
class StackSample:
    """Events with one kernel stack in one pod: drops (reason = drop reason name) or
    retransmits (reason = "TCP_RETRANSMIT"). Frames are function names, outer → inner.
    Stacks are sampled (bpf/stacks.h): `count` is the events the `samples` walks stand for."""

    pod: str
    netns: int
    reason: str
    frames: tuple[str, ...]
    count: int
    samples: int = 0


FULL_TIER = "full"    # every program runs (profiler/detail_tier.py)
QUIET_TIER = "quiet"  # the detail programs (softirq, NAPI, stack walks) are off


@dataclass(frozen=True)
class TierSwitch:
    """A change of detail tier, made at the end of an interval (profiler/detail_tier.py)."""

    at: float                      # wall clock (time.time()) when the switch was made
    to: str                        # FULL_TIER or QUIET_TIER
    why: str                       # for people: which figure crossed which threshold
    figures: Mapping[str, float] = field(default_factory=lambda: EMPTY)  # the interval's trouble figures
    problems: tuple[str, ...] = ()  # programs that could not be switched, and why

    def to_json(self) -> dict:
        return {"at": self.at, "to": self.to, "why": self.why, "figures": dict(self.figures),
                "problems": list(self.problems)}


@dataclass(frozen=True)
class Snapshot:
    """Deltas over [started_s, ended_s] (monotonic seconds)."""

    started_s: float
    ended_s: float
    pods: tuple[PodInterval, ...]
    flows: tuple[FlowRetransmits, ...] = ()
    cpus: tuple[CpuInterval, ...] = ()
    drop_sites: tuple[DropSite, ...] = ()
    stacks: tuple[StackSample, ...] = ()
    flow_drops: tuple[FlowDrops, ...] = ()
    # Events the kernel side could not count in full (a map was full), by map.
    lost: Mapping[str, int] = field(default_factory=lambda: EMPTY)
    # Events seen and deliberately not counted (frees that are not drops), by kind.
    ignored: Mapping[str, int] = field(default_factory=lambda: EMPTY)
    # Stack sampling over the interval, "<program>_<counter>" (walks, walk_ns, skipped_spacing,
    # skipped_budget; "<program>_pending_now": events not yet given a stack, a level).
    stack_sampling: Mapping[str, int] = field(default_factory=lambda: EMPTY)
    # The detail tier in force during the interval, and the switch made at its end (if any).
    tier: str = FULL_TIER
    tier_switch: TierSwitch | None = None

    @property
    def interval_s(self) -> float:
        return self.ended_s - self.started_s


class SnapshotFrame:
    """What sources write into during one interval; frozen into a Snapshot at the end.

    A source sets only its own fields; setting the same field twice for a pod or CPU is a
    bug in the sources' division of labour, and raises. Sources exchange nothing but what is
    in the frame, whatever order they collect in: one that needs what another writes (the
    listen source, the drops source's per-port listen-overflow drops) reads it in a
    `when_collected` callback, run once every source has collected.
    """

    def __init__(self, started_s: float, label: Any, final: bool = False, tier: str = FULL_TIER):
        self.started_s = started_s
        self.tier = tier  # the detail tier in force while the sources counted
        self._label = label  # netns inode → pod label
        # The capture ends with this interval: a source that reads some pods less often
        # (profiler/sources/netns_schedule.py) reads all of them now, so nothing counted is left behind.
        self.final = final
        self._pods: dict[int, dict[str, Any]] = {}
        self._cpus: dict[int, dict[str, Any]] = {}
        self.flows: list[FlowRetransmits] = []
        self.drop_sites: list[DropSite] = []
        self.stacks: list[StackSample] = []
        self.flow_drops: list[FlowDrops] = []
        self.lost: Counter[str] = Counter()
        self.ignored: Counter[str] = Counter()
        # TCP_LISTEN_OVERFLOW drops this interval by listening port (the drops source writes
        # them, the listen source charges them to its listeners); not part of the Snapshot.
        self.listen_overflow_drops: Counter[ListenerPort] = Counter()
        self._when_collected: list[Callable[[], None]] = []
        self.stack_sampling: dict[str, int] = {}

    def when_collected(self, callback: Callable[[], None]) -> None:
        """Run `callback` once every source has collected this interval, before the frame is
        frozen: what it reads of the frame is then complete, whatever the sources' order."""
        self._when_collected.append(callback)

    def label(self, netns: int) -> str:
        return self._label(netns)

    def pod(self, netns: int, **values: Any) -> None:
        entry = self._pods.setdefault(netns, {"pod": self._label(netns), "netns": netns})
        _set_once(entry, values, f"pod netns:{netns}")

    def cpu(self, cpu: int, **values: Any) -> None:
        entry = self._cpus.setdefault(cpu, {"cpu": cpu})
        _set_once(entry, values, f"cpu {cpu}")

    def freeze(self, ended_s: float) -> Snapshot:
        """The interval as a Snapshot, after the `when_collected` callbacks (in the order given)."""
        while self._when_collected:
            self._when_collected.pop(0)()
        return Snapshot(
            started_s=self.started_s,
            ended_s=ended_s,
            pods=tuple(PodInterval(**v) for _, v in sorted(self._pods.items())),
            flows=tuple(self.flows),
            cpus=tuple(CpuInterval(**v) for _, v in sorted(self._cpus.items())),
            drop_sites=tuple(self.drop_sites),
            stacks=tuple(self.stacks),
            flow_drops=tuple(self.flow_drops),
            lost=MappingProxyType({k: v for k, v in self.lost.items() if v}),
            ignored=MappingProxyType({k: v for k, v in self.ignored.items() if v}),
            stack_sampling=MappingProxyType(dict(self.stack_sampling)),
            tier=self.tier,
        )


def _set_once(entry: dict[str, Any], values: dict[str, Any], what: str) -> None:
    for key, value in values.items():
        if key in entry and key not in ("pod", "netns", "cpu"):
            raise ValueError(f"{what}: field {key!r} set twice in one interval")
        entry[key] = value


def _add_hist(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    if not a:
        return tuple(b)
    if not b:
        return tuple(a)
    width = max(len(a), len(b))
    return tuple((a[i] if i < len(a) else 0) + (b[i] if i < len(b) else 0) for i in range(width))


# How totals are summed: every int field but the identity, and every counter mapping.
POD_COUNTER_FIELDS = tuple(f.name for f in fields(PodInterval) if f.type == "int" and f.name != "netns")
POD_MAPPING_FIELDS = tuple(f.name for f in fields(PodInterval) if f.type.startswith("Mapping"))
CPU_MAPPING_FIELDS = ("softnet", "drops")
