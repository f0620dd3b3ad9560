"""Softirq time per CPU and vector, with run-time and queueing-delay histograms."""
from __future__ import annotations

from types import MappingProxyType

import numpy as np

from ..probes.softirq import SoftirqCounts, SoftirqProbe, trimmed
from ..snapshot import SnapshotFrame, SoftirqVector
from .base import ParkingSource


def _delta(now: np.ndarray, before: np.ndarray | None) -> np.ndarray:
    # Per-CPU array slots are never deleted or reset while attached: a plain difference.
    return now.astype(np.int64) - (before.astype(np.int64) if before is not None else 0)


def softirq_deltas(previous: SoftirqCounts | None, counts: SoftirqCounts) -> dict[int, dict[str, SoftirqVector]]:
    """CPU → vector name → what happened between two reads (since attach when previous is
    None). Vectors and CPUs with nothing to report are left out."""
    count = _delta(counts.count, previous.count if previous else None)
    time_ns = _delta(counts.time_ns, previous.time_ns if previous else None)
    run_time = _delta(counts.run_time_log2, previous.run_time_log2 if previous else None)
    queue_delay = _delta(counts.queue_delay_log2, previous.queue_delay_log2 if previous else None)
    queue_delay_ns = _delta(counts.queue_delay_ns, previous.queue_delay_ns if previous else None)
    per_cpu: dict[int, dict[str, SoftirqVector]] = {}
    for row, cpu in enumerate(counts.cpus):
        for vector, name in counts.vectors.items():
            if count[row, vector] == 0:
                continue
            per_cpu.setdefault(int(cpu), {})[name] = SoftirqVector(
                count=int(count[row, vector]),
                time_ns=int(time_ns[row, vector]),
                latency_log2_ns=trimmed(run_time[row, vector]),
                queue_delay_log2_ns=trimmed(queue_delay[row, vector]),
                queue_delay_ns=int(queue_delay_ns[row, vector]),
            )
    return per_cpu


class SoftirqSource(ParkingSource[SoftirqCounts]):
    name = "softirq"

    def __init__(self, probe: SoftirqProbe | None = None):
        super().__init__(probe or SoftirqProbe())

    def write_interval(self, frame: SnapshotFrame, previous: SoftirqCounts | None, counts: SoftirqCounts) -> None:
        for cpu, vectors in softirq_deltas(previous, counts).items():
            frame.cpu(cpu, softirq=MappingProxyType(vectors))
