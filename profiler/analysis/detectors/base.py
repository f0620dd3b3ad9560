"""What every detector shares: the live-node context, and rates over the capture."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ...document import PodView, ProfileDocument
from ..findings import Finding

# A capture of no time still gives finite rates (huge ones: any event in no time is a burst).
MIN_CAPTURE_S = 1e-9


@dataclass(frozen=True)
class AnalysisContext:
    """What detectors may know beyond the capture: only available on the live node."""

    netns_paths: dict[int, str] = field(default_factory=dict)  # netns inode → path to enter it
    topology: Any = None             # profiler.system.irqs.IrqTopology of this node, if live
    irqbalance_running: bool = False
    irqbalance: Any = None           # profiler.system.irqbalance.IrqbalanceState, if live
    root: Path = Path("/")


Detector = Callable[[ProfileDocument, AnalysisContext], list[Finding]]


def capture_s(doc: ProfileDocument) -> float:
    """The capture's duration as the detectors divide by it (never 0)."""
    return max(doc.duration_s, MIN_CAPTURE_S)


def per_s(doc: ProfileDocument, count: float) -> float:
    return count / capture_s(doc)


def to_int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def netns_path(ctx: AnalysisContext, pod: PodView) -> str | None:
    return ctx.netns_paths.get(pod.netns)
