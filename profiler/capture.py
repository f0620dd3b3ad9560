"""A whole capture: the snapshots of one run, their totals, and the profile JSON.

`SnapshotTotals` is the one place snapshots are added up (with optional pruning of pods gone
for a while): `Capture` uses it for `profile` and the TUI, serve's `ServedCapture` for its
running totals.

The JSON schema (`netprof.profile/v1`, profiler/schemas/profile-v1.json) is a contract with
users' scripts: fields are only ever added.

Totals have the same shape as one interval (a PodInterval summed over the capture is a
PodInterval), so every view can show either.
"""
from __future__ import annotations

import os
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Callable, Iterable, Mapping

from .detail_tier import TierSettings, TierTotals
from .kernel.features import KernelInfo
from .kernel.stacks import RETRANSMIT_STACK_REASON, stack_sampling_json
from .probes.base import ProbeStatus
from .findings import Finding
from .cost import Cost
from .document import ProfileDocument
from .system.node import NodeContext
if TYPE_CHECKING:
    from .netns_names import PodIdentity
from .snapshot import (
    CPU_MAPPING_FIELDS, POD_COUNTER_FIELDS, POD_MAPPING_FIELDS, QUEUE_DELAY_SAMPLE_EVERY, UNKNOWN_LISTENER_ADDRESS,
    CpuInterval, DropSite,
    FlowDrops, FlowKey, Listener, PodInterval, Snapshot, StackSample,
)

SCHEMA = "netprof.profile/v1"
MAX_DROP_SITES = 20
MAX_FLOW_DROPS = 200  # TCP flows with drops kept in the JSON, busiest first


LEVEL_SUFFIX = "_now"  # a gauge (conntrack count_now, max_now): the latest value, not a sum


def _sum_mappings(a: Mapping[str, int], b: Mapping[str, int]) -> Mapping[str, int]:
    if not b:
        return a
    if not a:
        return b
    total = Counter({k: v for k, v in a.items() if not k.endswith(LEVEL_SUFFIX)})
    total.update({k: v for k, v in b.items() if not k.endswith(LEVEL_SUFFIX)})
    levels = {k: v for k, v in a.items() if k.endswith(LEVEL_SUFFIX)}
    levels.update({k: v for k, v in b.items() if k.endswith(LEVEL_SUFFIX)})
    return MappingProxyType({**total, **levels})


def merge_pods(a: PodInterval, b: PodInterval) -> PodInterval:
    values: dict = {name: getattr(a, name) + getattr(b, name) for name in POD_COUNTER_FIELDS}
    values.update({name: _sum_mappings(getattr(a, name), getattr(b, name)) for name in POD_MAPPING_FIELDS})
    listeners: dict[tuple[str, int], Listener] = {(l.address, l.port): l for l in a.listeners}
    for listener in b.listeners:
        key = (listener.address, listener.port)
        listeners[key] = listeners[key].merge(listener) if key in listeners else listener
    return replace(a, pod=b.pod, listeners=tuple(listeners[k] for k in sorted(listeners)), **values)


def merge_cpus(a: CpuInterval, b: CpuInterval) -> CpuInterval:
    softirq = dict(a.softirq)
    for vector, stats in b.softirq.items():
        softirq[vector] = softirq[vector].merge(stats) if vector in softirq else stats
    napi = {d.device: d for d in a.napi}
    for device in b.napi:
        napi[device.device] = napi[device.device].merge(device) if device.device in napi else device
    values = {name: _sum_mappings(getattr(a, name), getattr(b, name)) for name in CPU_MAPPING_FIELDS}
    return replace(a, softirq=MappingProxyType(softirq), napi=tuple(napi[k] for k in sorted(napi)), **values)


@dataclass(frozen=True)
class FlowTotals:
    pod: str
    flow: FlowKey
    retransmits: int
    segments: int
    states: dict[str, int]

    def to_json(self) -> dict:
        return {
            "pod": self.pod,
            "netns": self.flow.netns,
            "family": "ipv6" if self.flow.family == 10 else "ipv4",
            "saddr": self.flow.saddr,
            "sport": self.flow.sport,
            "daddr": self.flow.daddr,
            "dport": self.flow.dport,
            "retransmits": self.retransmits,
            "retransmitted_segments": self.segments,
            "states": dict(self.states),
        }


NETWORK_SOFTIRQS = ("NET_RX", "NET_TX")


def events_counted(doc: Mapping) -> int:
    """Tracepoint hits the probes counted: softirq runs of the network vectors, NAPI polls,
    skb drops, retransmits and receive-queue-full events (not the counters read from /proc)."""
    total = 0
    for cpu in doc.get("cpus") or ():
        softirq = cpu.get("softirq") or {}
        total += sum((softirq.get(v) or {}).get("count", 0) for v in NETWORK_SOFTIRQS)
        total += sum(d.get("polls", 0) for d in cpu.get("napi") or ())
        total += sum((cpu.get("drops") or {}).values())
    for pod in doc.get("pods") or ():
        total += pod.get("retransmits", 0) + pod.get("rcvqueue_full", 0)
    total += sum((doc.get("ignored_events") or {}).values())
    return total



def flow_drops_json(row: FlowDrops) -> dict:
    return {
        "pod": row.pod, "netns": row.flow.netns, "family": "ipv6" if row.flow.family == 10 else "ipv4",
        "saddr": row.flow.saddr, "sport": row.flow.sport, "daddr": row.flow.daddr, "dport": row.flow.dport,
        "reason": row.reason, "symbol": row.symbol, "count": row.count,
    }


def pod_json(pod: PodInterval, identity: "PodIdentity | None" = None) -> dict:
    return {
        "pod": pod.pod,
        "netns": pod.netns,
        **({"kubernetes": identity.to_json()} if identity is not None else {}),
        "retransmits": pod.retransmits,
        "retransmitted_segments": pod.retransmitted_segments,
        "drops": dict(sorted(pod.drops.items(), key=lambda i: -i[1])),
        "rcvqueue_full": pod.rcvqueue_full,
        "listen": [listener.to_json() for listener in pod.listeners],
        "conntrack": dict(pod.conntrack),
        "netstat": dict(pod.netstat),
    }


def cpu_json(cpu: CpuInterval) -> dict:
    return {
        "cpu": cpu.cpu,
        "softirq": {
            vector: {
                "count": stats.count,
                "time_ns": stats.time_ns,
                "latency_log2_ns": list(stats.latency_log2_ns),
                "queue_delay_log2_ns": list(stats.queue_delay_log2_ns),
                "queue_delay_ns": stats.queue_delay_ns,
                "queue_delay_sample_every": QUEUE_DELAY_SAMPLE_EVERY,
            }
            for vector, stats in sorted(cpu.softirq.items())
        },
        "napi": [
            {"device": d.device, "polls": d.polls, "packets": d.packets, "budget_exhausted": d.budget_exhausted}
            for d in cpu.napi
        ],
        "softnet": dict(cpu.softnet),
        "drops": dict(sorted(cpu.drops.items(), key=lambda i: -i[1])),
    }


def _pod_activity(pod: PodInterval) -> int:
    return pod.retransmits + sum(pod.drops.values()) + pod.rcvqueue_full + sum(l.overflow_drops for l in pod.listeners)


GONE_POD = "(pods gone)"
# The netns of the `(pods gone)` entry: no namespace's inode (the kernel numbers them up from
# 0xF0000000, one per live namespace, so it would take 268 million at once), and not 0, which
# is an entry of its own: events whose namespace the probe could not read ("unknown").
GONE_NETNS = 0xFFFFFFFF
UNKNOWN_NETNS = 0


def _retired(pod: PodInterval) -> PodInterval:
    """A pod's totals as they join the `(pods gone)` entry: every counter kept, levels
    (`*_now`) left out (the last reading of a pod that no longer exists is nobody's level),
    listeners by port alone."""
    values = {name: MappingProxyType({k: v for k, v in getattr(pod, name).items() if not k.endswith(LEVEL_SUFFIX)})
              for name in POD_MAPPING_FIELDS}
    listeners: dict[int, Listener] = {}
    for listener in pod.listeners:
        # By port alone: the addresses of gone pods would grow with pod churn.
        listener = replace(listener, address=UNKNOWN_LISTENER_ADDRESS)
        listeners[listener.port] = listeners[listener.port].merge(listener) if listener.port in listeners else listener
    return replace(pod, pod=GONE_POD, netns=GONE_NETNS, listeners=tuple(listeners[p] for p in sorted(listeners)),
                   **values)


class SnapshotTotals:
    """Snapshots added up: the one place that does it (profile and the TUI through Capture,
    serve through its ServedCapture). Per pod, per CPU, per drop site, and, with `detail`,
    per flow, per flow drop and per kernel stack; lost and ignored events.

    With `prune_after`, a pod absent for more than that many intervals in a row (its netns
    neither exists nor had events) is pruned: its counts join the `(pods gone)` entry, so the
    totals stay the sum of everything added, while pod churn does not grow them forever. A
    pod that comes back starts from zero. Presence is known only from what `add` is told
    exists; netns 0 (events of no readable namespace) is never pruned.
    """

    def __init__(self, prune_after: int | None = None, detail: bool = True,
                 preferred_label: Callable[[int], str | None] = lambda netns: None):
        self.prune_after = prune_after
        self.detail = detail
        # A label that beats any an interval carried (the capture's pod directory's), or None.
        self._preferred_label = preferred_label
        self.intervals = 0
        self.sampled_s = 0.0   # the intervals' lengths, summed
        self._labels: dict[int, str] = {}          # netns → its latest label
        self._pods: dict[int, PodInterval] = {}
        self._gone: PodInterval | None = None
        self._absent: dict[int, int] = {}          # netns → intervals absent in a row
        self._cpus: dict[int, CpuInterval] = {}
        self._sites: Counter[tuple[str, str]] = Counter()  # (reason, symbol), in first-seen order
        self._flows: Counter[FlowKey] = Counter()
        self._flow_segments: Counter[FlowKey] = Counter()
        self._flow_states: dict[FlowKey, Counter[str]] = defaultdict(Counter)
        self._flow_drops: Counter[tuple[FlowKey, str, str]] = Counter()
        self._stacks: Counter[tuple[int, str, tuple[str, ...]]] = Counter()
        self._stack_samples: Counter[tuple[int, str, tuple[str, ...]]] = Counter()  # walks per stack
        self._stack_sampling: Mapping[str, int] = {}   # Snapshot.stack_sampling, summed
        self._lost: Counter[str] = Counter()
        self._ignored: Counter[str] = Counter()
        self.tiers = TierTotals()   # seconds in each detail tier, switches

    def know(self, pods: Mapping[int, str]) -> None:
        """Pods known to exist at some point: each gets its entry (zeros when quiet); the
        label is used only where no interval carried one."""
        for netns, label in pods.items():
            self._labels.setdefault(netns, label)
            self._pods.setdefault(netns, PodInterval(label, netns))

    def know_cpus(self, cpus: Iterable[int]) -> None:
        for cpu in cpus:
            self._cpus.setdefault(cpu, CpuInterval(cpu))

    def add(self, snapshot: Snapshot, present: Mapping[int, str] | None = None) -> set[int]:
        """Fold one interval in. `present` (netns → label): the pods that exist now, under
        their best name now; None: presence is not tracked (nothing is pruned). Returns the
        netns whose counts went to `(pods gone)` in this call."""
        retired: set[int] = set()
        if present is not None:
            for netns, label in present.items():
                if netns in self._pods and netns in self._absent and self._labels.get(netns) != label:
                    # The netns had gone and its inode is back under another name: the kernel
                    # reused it for a new pod, which starts from zero.
                    self._retire(netns)
                    retired.add(netns)
                self._labels[netns] = label
                self._pods.setdefault(netns, PodInterval(label, netns))
        self._add_rows(snapshot)
        for pod in snapshot.pods:
            self._labels[pod.netns] = pod.pod
            before = self._pods.get(pod.netns)
            self._pods[pod.netns] = merge_pods(before, pod) if before is not None else pod
        for cpu in snapshot.cpus:
            before = self._cpus.get(cpu.cpu)
            self._cpus[cpu.cpu] = merge_cpus(before, cpu) if before is not None else cpu
        for site in snapshot.drop_sites:
            self._sites[(site.reason, site.symbol)] += site.count
        self._lost.update(snapshot.lost)
        self._ignored.update(snapshot.ignored)
        self._stack_sampling = _sum_mappings(self._stack_sampling, snapshot.stack_sampling)
        self.tiers.add(snapshot)
        self.intervals += 1
        self.sampled_s += snapshot.interval_s
        if present is not None:
            retired |= self._age(snapshot, present)
        return retired

    def _add_rows(self, snapshot: Snapshot) -> None:
        if not self.detail:
            return
        for row in snapshot.flows:
            self._flows[row.flow] += row.retransmits
            self._flow_segments[row.flow] += row.segments
            self._flow_states[row.flow][row.state] += row.retransmits
            self._labels[row.flow.netns] = row.pod
        for drop in snapshot.flow_drops:
            self._flow_drops[(drop.flow, drop.reason, drop.symbol)] += drop.count
            self._labels[drop.flow.netns] = drop.pod
        for stack in snapshot.stacks:
            self._stacks[(stack.netns, stack.reason, stack.frames)] += stack.count
            self._stack_samples[(stack.netns, stack.reason, stack.frames)] += stack.samples
            self._labels[stack.netns] = stack.pod

    def _age(self, snapshot: Snapshot, present: Mapping[int, str]) -> set[int]:
        active = {pod.netns for pod in snapshot.pods}
        retired = set()
        for netns in list(self._pods):
            if netns in present or netns in active or netns == UNKNOWN_NETNS:
                self._absent.pop(netns, None)
                continue
            self._absent[netns] = self._absent.get(netns, 0) + 1
            if self.prune_after is not None and self._absent[netns] > self.prune_after:
                self._retire(netns)
                retired.add(netns)
        return retired

    def _retire(self, netns: int) -> None:
        """The pod's counts join `(pods gone)`; its entry (and per-flow and per-stack rows)
        leave, so its netns starts from zero if it comes back."""
        pod = _retired(self._pods.pop(netns))
        self._gone = merge_pods(self._gone, pod) if self._gone is not None else pod
        self._absent.pop(netns, None)
        self._labels.pop(netns, None)
        for flow in [f for f in self._flows if f.netns == netns]:
            gone = replace(flow, netns=GONE_NETNS)
            self._flows[gone] += self._flows.pop(flow)
            self._flow_segments[gone] += self._flow_segments.pop(flow)
            self._flow_states[gone].update(self._flow_states.pop(flow))
        for key in [k for k in self._flow_drops if k[0].netns == netns]:
            flow, reason, symbol = key
            self._flow_drops[(replace(flow, netns=GONE_NETNS), reason, symbol)] += self._flow_drops.pop(key)
        for key in [k for k in self._stacks if k[0] == netns]:
            self._stacks[(GONE_NETNS,) + key[1:]] += self._stacks.pop(key)
            self._stack_samples[(GONE_NETNS,) + key[1:]] += self._stack_samples.pop(key, 0)

    def label(self, netns: int) -> str:
        if netns == GONE_NETNS:
            return GONE_POD
        return self._preferred_label(netns) or self._labels.get(netns, f"netns:{netns}")

    def pods(self) -> list[PodInterval]:
        """Every pod's totals under its latest label, in netns order, `(pods gone)` last."""
        pods = [replace(pod, pod=self.label(netns)) for netns, pod in sorted(self._pods.items())]
        return pods + ([self._gone] if self._gone is not None else [])

    def cpus(self) -> list[CpuInterval]:
        return [self._cpus[cpu] for cpu in sorted(self._cpus)]

    def drop_sites(self, limit: int | None = None) -> list[DropSite]:
        """The busiest `limit` drop sites (all of them without), busiest first."""
        return [DropSite(reason, symbol, n) for (reason, symbol), n in self._sites.most_common(limit)]

    def drop_site_counts(self) -> Mapping[tuple[str, str], int]:
        """(reason, symbol) → drops, in the order the sites were first seen."""
        return MappingProxyType(self._sites)

    def flows(self) -> list[FlowTotals]:
        flows = [FlowTotals(self.label(k.netns), k, n, self._flow_segments[k], dict(self._flow_states[k]))
                 for k, n in self._flows.items()]
        return sorted(flows, key=lambda f: (-f.retransmits, f.pod, f.flow.sport))

    def flow_drops(self, limit: int | None = None) -> list[FlowDrops]:
        return [FlowDrops(self.label(flow.netns), flow, reason, symbol, n)
                for (flow, reason, symbol), n in self._flow_drops.most_common(limit)]

    def stacks(self) -> list[StackSample]:
        """Per stack: the events its walks stand for, and the walks (bpf/stacks.h)."""
        stacks = [StackSample(self.label(netns), netns, reason, frames, n, self._stack_samples[(netns, reason, frames)])
                  for (netns, reason, frames), n in self._stacks.items()]
        return sorted(stacks, key=lambda s: (-s.count, s.pod, s.reason, s.frames))

    def stack_sampling(self, duration_s: float, cpus: int) -> dict | None:
        """The `stack_sampling` section: how the stacks were sampled, None when none were."""
        events: Counter[str] = Counter()
        for (_netns, reason, _frames), n in self._stacks.items():
            events["retransmit" if reason == RETRANSMIT_STACK_REASON else "drop"] += n
        return stack_sampling_json(self._stack_sampling, events, duration_s, cpus)

    def lost(self) -> dict[str, int]:
        return dict(self._lost)

    def ignored(self) -> dict[str, int]:
        return dict(self._ignored)


@dataclass
class Capture:
    kernel: KernelInfo
    probes: list[ProbeStatus]
    started_at: float = field(default_factory=time.time)  # wall clock, for the record
    snapshots: list[Snapshot] = field(default_factory=list)
    # netns inode → label of every pod known during the capture, quiet ones included.
    known_pods: dict[int, str] = field(default_factory=dict)
    # netns inode → the Kubernetes pod (namespace, name, UID, containers) where a resolver
    # knows it; kept once seen, so a pod deleted mid-capture keeps its containers too.
    pod_identities: dict[int, "PodIdentity"] = field(default_factory=dict)
    interrupted: bool = False
    node: NodeContext | None = None  # read at the end of the capture
    findings: list[Finding] = field(default_factory=list)  # ranked, from profiler.analysis
    cost: Cost | None = None  # what netprof cost the node over these snapshots (profiler.cost)
    tier: TierSettings | None = None  # the detail tier asked for (None: not said; profiler.detail_tier)

    def __post_init__(self) -> None:
        # The labels the pod directory gave when the capture was assembled are its best (a
        # netns first seen before its runtime record was read is named better by then): they
        # beat the label an interval carried. Netns it did not name keep their latest label.
        self._directory_named = frozenset(self.known_pods)
        self._totals = SnapshotTotals(preferred_label=self._directory_label)
        self._sections_key: tuple | None = None
        self._sections_cache: dict = {}
        for snapshot in self.snapshots:
            self._totals.add(snapshot)
            self._know(snapshot)

    def _directory_label(self, netns: int) -> str | None:
        return self.known_pods.get(netns) if netns in self._directory_named else None

    def label_of(self, netns: int, seen: str) -> str:
        return self._directory_label(netns) or seen

    def add(self, snapshot: Snapshot) -> None:
        self.snapshots.append(snapshot)
        self._totals.add(snapshot)
        self._know(snapshot)

    def _know(self, snapshot: Snapshot) -> None:
        for pod in snapshot.pods:
            self.known_pods.setdefault(pod.netns, pod.pod)

    @property
    def totals(self) -> SnapshotTotals:
        """The snapshots added up, every pod known during the capture included."""
        self._totals.know(self.known_pods)
        return self._totals

    @property
    def duration_s(self) -> float:
        if not self.snapshots:
            return 0.0
        return self.snapshots[-1].ended_s - self.snapshots[0].started_s

    def pod_totals(self) -> list[PodInterval]:
        """Busiest first."""
        return sorted(self.totals.pods(), key=lambda p: (-_pod_activity(p), -p.retransmits, p.pod))

    def cpu_totals(self) -> list[CpuInterval]:
        return self.totals.cpus()

    def flow_totals(self) -> list[FlowTotals]:
        return self.totals.flows()

    def drop_site_totals(self) -> list[DropSite]:
        return self.totals.drop_sites(MAX_DROP_SITES)

    def flow_drop_totals(self) -> list[FlowDrops]:
        """TCP packets dropped per (flow, where, reason, site) over the capture, busiest first."""
        return self.totals.flow_drops(MAX_FLOW_DROPS)

    def stack_totals(self) -> list[StackSample]:
        """Events per (pod, reason, kernel stack) over the capture, busiest first. Not capped:
        the kernel's maps bound how many there can be, and exports must add up."""
        return self.totals.stacks()

    def stack_sampling(self) -> dict | None:
        """Stack sampling over the capture (bpf/stacks.h), or None when no stacks were sampled."""
        cpus = self.cost.online_cpus if self.cost is not None and self.cost.online_cpus else (os.cpu_count() or 1)
        return self.totals.stack_sampling(self.duration_s, cpus)

    def lost(self) -> dict[str, int]:
        return self.totals.lost()

    def ignored(self) -> dict[str, int]:
        return self.totals.ignored()

    def _sections(self) -> dict:
        """The parts of the profile JSON that add up the snapshots, built once per state of
        the capture (its snapshots, pods known and their identities), whoever asks first:
        analysis reads them (live.py) and the saved capture is the same dicts. Shared between
        to_json() calls: read them, never change them."""
        key = (len(self.snapshots), dict(self.known_pods), dict(self.pod_identities))
        if self._sections_key != key:
            self._sections_cache = {
                "pods": [pod_json(pod, self.pod_identities.get(pod.netns)) for pod in self.pod_totals()],
                "flows": [flow.to_json() for flow in self.flow_totals()],
                "cpus": [cpu_json(cpu) for cpu in self.cpu_totals()],
                "drop_sites": [{"reason": s.reason, "symbol": s.symbol, "count": s.count}
                               for s in self.drop_site_totals()],
                "stacks": [{"pod": s.pod, "netns": s.netns, "reason": s.reason, "frames": list(s.frames),
                            "count": s.count, "samples": s.samples} for s in self.stack_totals()],
                "stack_sampling": self.stack_sampling(),
                "flow_drops": [flow_drops_json(row) for row in self.flow_drop_totals()],
                "lost_events": self.lost(),
                "ignored_events": self.ignored(),
            }
            self._sections_key = key
        return self._sections_cache

    def document(self) -> ProfileDocument:
        """The capture as the typed reader analysis and views read (profiler/document.py)."""
        return ProfileDocument(self.to_json())

    def to_json(self) -> dict:
        sections = self._sections()
        return {
            "schema": SCHEMA,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
            "interrupted": self.interrupted,
            "intervals": len(self.snapshots),
            "kernel": self.kernel.to_json(),
            "node": self.node.to_json() if self.node else None,
            "probes": [status.to_json() for status in self.probes],
            "pods": sections["pods"],
            "flows": sections["flows"],
            "cpus": sections["cpus"],
            "drop_sites": sections["drop_sites"],
            "stacks": sections["stacks"],
            "stack_sampling": sections["stack_sampling"],
            "flow_drops": sections["flow_drops"],
            "findings": [finding.to_json() for finding in self.findings],
            "lost_events": sections["lost_events"],
            "ignored_events": sections["ignored_events"],
            "cost": self.cost.to_json() if self.cost else None,
            "tier": self.totals.tiers.to_json(self.tier),
        }
