"""A whole capture: the snapshots of one run, their totals, and the profile JSON.

The JSON schema (`netprof.profile/v1`, profiler/schemas/profile-v1.json) is a contract with
users' scripts: fields are only ever added.

Totals have the same shape as one interval (a PodInterval summed over the capture is a
PodInterval), so every view can show either.
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Mapping

from .kernel.features import KernelInfo
from .probes.base import ProbeStatus
from .analysis.findings import Finding
from .cost import Cost
from .system.node import NodeContext
if TYPE_CHECKING:
    from .k8s.base import PodIdentity
from .snapshot import (
    CPU_MAPPING_FIELDS, POD_COUNTER_FIELDS, POD_MAPPING_FIELDS, CpuInterval, DropSite, FlowDrops, FlowKey,
    Listener, PodInterval, Snapshot, StackSample,
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

    def __post_init__(self) -> None:
        # The labels the pod directory gave when the capture was assembled are its best (a
        # netns first seen before its runtime record was read is named better by then): they
        # beat the label an interval carried. Netns it did not name keep their latest label.
        self._directory_named = frozenset(self.known_pods)

    def label_of(self, netns: int, seen: str) -> str:
        return self.known_pods[netns] if netns in self._directory_named else seen

    def add(self, snapshot: Snapshot) -> None:
        self.snapshots.append(snapshot)
        for pod in snapshot.pods:
            self.known_pods.setdefault(pod.netns, pod.pod)

    @property
    def duration_s(self) -> float:
        if not self.snapshots:
            return 0.0
        return self.snapshots[-1].ended_s - self.snapshots[0].started_s

    def pod_totals(self) -> list[PodInterval]:
        totals: dict[int, PodInterval] = {n: PodInterval(label, n) for n, label in self.known_pods.items()}
        for snapshot in self.snapshots:
            for pod in snapshot.pods:
                totals[pod.netns] = merge_pods(totals[pod.netns], pod) if pod.netns in totals else pod
        totals = {n: replace(pod, pod=self.label_of(n, pod.pod)) for n, pod in totals.items()}
        return sorted(totals.values(), key=lambda p: (-_pod_activity(p), -p.retransmits, p.pod))

    def cpu_totals(self) -> list[CpuInterval]:
        totals: dict[int, CpuInterval] = {}
        for snapshot in self.snapshots:
            for cpu in snapshot.cpus:
                totals[cpu.cpu] = merge_cpus(totals[cpu.cpu], cpu) if cpu.cpu in totals else cpu
        return [totals[c] for c in sorted(totals)]

    def flow_totals(self) -> list[FlowTotals]:
        counts: Counter[FlowKey] = Counter()
        segments: Counter[FlowKey] = Counter()
        states: dict[FlowKey, Counter[str]] = defaultdict(Counter)
        pods: dict[FlowKey, str] = {}
        for snapshot in self.snapshots:
            for row in snapshot.flows:
                counts[row.flow] += row.retransmits
                segments[row.flow] += row.segments
                states[row.flow][row.state] += row.retransmits
                pods[row.flow] = row.pod
        flows = [FlowTotals(self.label_of(k.netns, pods[k]), k, n, segments[k], dict(states[k]))
                 for k, n in counts.items()]
        return sorted(flows, key=lambda f: (-f.retransmits, f.pod, f.flow.sport))

    def drop_site_totals(self) -> list[DropSite]:
        counts: Counter[tuple[str, str]] = Counter()
        for snapshot in self.snapshots:
            for site in snapshot.drop_sites:
                counts[(site.reason, site.symbol)] += site.count
        return [DropSite(r, s, n) for (r, s), n in counts.most_common(MAX_DROP_SITES)]

    def flow_drop_totals(self) -> list[FlowDrops]:
        """TCP packets dropped per (flow, where, reason, site) over the capture, busiest first."""
        counts: Counter[tuple[FlowKey, str, str]] = Counter()
        labels: dict[int, str] = dict(self.known_pods)
        for snapshot in self.snapshots:
            for row in snapshot.flow_drops:
                counts[(row.flow, row.reason, row.symbol)] += row.count
                labels[row.flow.netns] = row.pod
        rows = [FlowDrops(labels[flow.netns], flow, reason, symbol, n)
                for (flow, reason, symbol), n in counts.most_common(MAX_FLOW_DROPS)]
        return rows

    def stack_totals(self) -> list[StackSample]:
        """Events per (pod, reason, kernel stack) over the capture, busiest first. Not capped:
        the kernel's maps bound how many there can be, and exports must add up."""
        counts: Counter[tuple[int, str, tuple[str, ...]]] = Counter()
        # A pod's latest label, as pod_totals() gives it: a netns first seen mid-capture may
        # be "netns:<inode>" in the interval that had its stacks and named only later.
        labels: dict[int, str] = dict(self.known_pods)
        for snapshot in self.snapshots:
            for stack in snapshot.stacks:
                counts[(stack.netns, stack.reason, stack.frames)] += stack.count
                labels[stack.netns] = stack.pod
            for pod in snapshot.pods:
                labels[pod.netns] = pod.pod
        stacks = [StackSample(self.label_of(netns, labels[netns]), netns, reason, frames, n) for (netns, reason, frames), n in counts.items()]
        return sorted(stacks, key=lambda s: (-s.count, s.pod, s.reason, s.frames))

    def lost(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for snapshot in self.snapshots:
            total.update(snapshot.lost)
        return dict(total)

    def ignored(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for snapshot in self.snapshots:
            total.update(snapshot.ignored)
        return dict(total)

    def to_json(self) -> dict:
        return {
            "schema": SCHEMA,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
            "interrupted": self.interrupted,
            "intervals": len(self.snapshots),
            "kernel": self.kernel.to_json(),
            "node": self.node.to_json() if self.node else None,
            "probes": [status.to_json() for status in self.probes],
            "pods": [pod_json(pod, self.pod_identities.get(pod.netns)) for pod in self.pod_totals()],
            "flows": [flow.to_json() for flow in self.flow_totals()],
            "cpus": [cpu_json(cpu) for cpu in self.cpu_totals()],
            "drop_sites": [{"reason": s.reason, "symbol": s.symbol, "count": s.count}
                           for s in self.drop_site_totals()],
            "stacks": [{"pod": s.pod, "netns": s.netns, "reason": s.reason, "frames": list(s.frames),
                        "count": s.count} for s in self.stack_totals()],
            "flow_drops": [flow_drops_json(row) for row in self.flow_drop_totals()],
            "findings": [finding.to_json() for finding in self.findings],
            "lost_events": self.lost(),
            "ignored_events": self.ignored(),
            "cost": self.cost.to_json() if self.cost else None,
        }
