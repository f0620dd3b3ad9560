from __future__ import annotations

from typing import Callable, Generic, Protocol, TypeVar

import numpy as np

from ..kernel.loader import BpfLoader
from ..probes.base import Probe, ProbeStatus
from ..kernel.maps import counter_deltas
from ..kernel.stacks import STACK_RATE_LIMITED
from ..snapshot import SnapshotFrame, StackSample


class Source(Protocol):
    name: str

    def attach(self, loader: BpfLoader) -> list[ProbeStatus]:
        """Attach what this source needs; report each probe's status, never raise for an
        unsupported kernel feature."""

    def collect(self, frame: SnapshotFrame) -> None:
        """Write what changed since the previous collect (or since attach) into the frame."""

    def detach(self) -> None:
        """Release everything; safe after a failed attach and when called twice."""


CountsT = TypeVar("CountsT")


class ProbeSource(Generic[CountsT]):
    """A `Source` fed by one BPF probe whose `read()` returns cumulative counts: attach,
    detach, and the read that hands each interval's counts, with the previous interval's (None
    for the first since attach), to `write_interval`. Nothing is read after a failed attach."""

    name: str

    def __init__(self, probe: Probe) -> None:
        self.probe = probe
        self._attached = False
        self._previous: CountsT | None = None

    def attach(self, loader: BpfLoader) -> list[ProbeStatus]:
        status = self.probe.attach(loader)
        self._attached = status.attached
        # A new attach starts the counters from zero: an older read is no baseline for them.
        self._previous = None
        return [status]

    def collect(self, frame: SnapshotFrame) -> None:
        if not self._attached:
            return
        counts = self.probe.read()
        previous, self._previous = self._previous, counts
        self.write_interval(frame, previous, counts)

    def write_interval(self, frame: SnapshotFrame, previous: CountsT | None, counts: CountsT) -> None:
        raise NotImplementedError

    def detach(self) -> None:
        self.probe.detach()
        self._attached = False


def write_stack_samples(frame: SnapshotFrame, previous, counts, prefix: str,
                        reason_of: Callable[[np.void], str], frames_of: Callable[[int], tuple[str, ...]]) -> None:
    """Kernel stacks counted per (netns, …, stack id) since the previous read → StackSamples;
    stacks the kernel could not record → `ignored` (past the per-CPU budget: a deliberate
    limit, the events themselves are counted) or `lost` (a full map).

    previous/counts: probe readings with `stack_keys`, `per_stack` and `stacks_lost`."""
    delta = counter_deltas(previous.stack_keys if previous else None,
                           previous.per_stack if previous else None,
                           counts.stack_keys, counts.per_stack)["count"]
    for index in np.flatnonzero(delta > 0):
        key = counts.stack_keys[index]
        netns = int(key["netns_inode"])
        frame.stacks.append(StackSample(pod=frame.label(netns), netns=netns, reason=reason_of(key),
                                        frames=frames_of(int(key["stack_id"])), count=int(delta[index])))
    for slot, total in counts.stacks_lost.items():
        counter = frame.ignored if slot == STACK_RATE_LIMITED else frame.lost
        counter[f"{prefix}_stacks_{slot}"] += total - (previous.stacks_lost[slot] if previous else 0)
