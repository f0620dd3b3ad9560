"""A whole capture: the snapshots of one run, their totals, and the profile JSON.

The JSON schema (`netprof.profile/v1`, profiler/schemas/profile-v1.json) is a contract with
users' scripts: fields are only ever added.
"""
from __future__ import annotations

import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field

from .kernel.features import KernelInfo
from .probes.base import ProbeStatus
from .snapshot import FlowKey, Snapshot

SCHEMA = "netprof.profile/v1"


@dataclass(frozen=True)
class PodTotals:
    pod: str
    netns: int
    retransmits: int
    retransmitted_segments: int

    def to_json(self) -> dict:
        return {"pod": self.pod, "netns": self.netns, "retransmits": self.retransmits,
                "retransmitted_segments": self.retransmitted_segments}


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


@dataclass
class Capture:
    kernel: KernelInfo
    probes: list[ProbeStatus]
    started_at: float = field(default_factory=time.time)  # wall clock, for the record
    snapshots: list[Snapshot] = field(default_factory=list)
    # netns inode → label of every pod known during the capture, quiet ones included.
    known_pods: dict[int, str] = field(default_factory=dict)
    interrupted: bool = False

    def add(self, snapshot: Snapshot) -> None:
        self.snapshots.append(snapshot)
        for pod in snapshot.pods:
            self.known_pods.setdefault(pod.netns, pod.pod)

    @property
    def duration_s(self) -> float:
        if not self.snapshots:
            return 0.0
        return self.snapshots[-1].ended_s - self.snapshots[0].started_s

    def pod_totals(self) -> list[PodTotals]:
        retransmits: Counter[int] = Counter()
        segments: Counter[int] = Counter()
        labels = dict(self.known_pods)
        for snapshot in self.snapshots:
            for pod in snapshot.pods:
                retransmits[pod.netns] += pod.retransmits
                segments[pod.netns] += pod.retransmitted_segments
                labels[pod.netns] = pod.pod
        totals = [PodTotals(labels[n], n, retransmits[n], segments[n]) for n in labels]
        return sorted(totals, key=lambda p: (-p.retransmits, p.pod))

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
        flows = [FlowTotals(pods[k], k, n, segments[k], dict(states[k])) for k, n in counts.items()]
        return sorted(flows, key=lambda f: (-f.retransmits, f.pod, f.flow.sport))

    def lost(self) -> dict[str, int]:
        total: Counter[str] = Counter()
        for snapshot in self.snapshots:
            total.update(snapshot.lost)
        return dict(total)

    def to_json(self) -> dict:
        return {
            "schema": SCHEMA,
            "started_at": self.started_at,
            "duration_s": round(self.duration_s, 3),
            "interrupted": self.interrupted,
            "intervals": len(self.snapshots),
            "kernel": self.kernel.to_json(),
            "probes": [status.to_json() for status in self.probes],
            "pods": [pod.to_json() for pod in self.pod_totals()],
            "flows": [flow.to_json() for flow in self.flow_totals()],
            "cpus": [],
            "findings": [],
            "lost_events": self.lost(),
        }
