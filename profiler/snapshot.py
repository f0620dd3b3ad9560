"""One immutable record per sampling interval: what changed, attributed to pods.

Everything downstream (capture totals, the report, the TUI, detectors) reads these and
nothing else; none of it knows about BPF maps.
"""
from __future__ import annotations

from dataclasses import dataclass, field


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
class PodInterval:
    pod: str
    netns: int
    retransmits: int = 0            # retransmitted skbs
    retransmitted_segments: int = 0  # MSS segments in them (nstat's TcpRetransSegs)


@dataclass(frozen=True)
class Snapshot:
    """Deltas over [started_s, ended_s] (monotonic seconds)."""

    started_s: float
    ended_s: float
    pods: tuple[PodInterval, ...]
    flows: tuple[FlowRetransmits, ...]
    # Events the kernel side could not count in full (a map was full), by map.
    lost: dict[str, int] = field(default_factory=dict)

    @property
    def interval_s(self) -> float:
        return self.ended_s - self.started_s
