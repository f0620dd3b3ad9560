from __future__ import annotations

from typing import Callable, Generic, Protocol, TypeVar

import numpy as np

from ..kernel.loader import BpfLoader
from ..probes.base import Probe, ProbeStatus
from ..kernel.maps import counter_deltas
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


class DetailSource(Protocol):
    """A source with detail programs the quiet tier switches off (profiler/detail_tier.py).
    Optional: the sampler asks every source that has `set_detail`."""

    name: str

    def set_detail(self, on: bool) -> None:
        """Switch the detail programs on or off; before attach, how they start. Raises
        NetprofError when they cannot be switched on (they stay off)."""


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
        self._detail = True

    def attach(self, loader: BpfLoader) -> list[ProbeStatus]:
        status = self.probe.attach(loader)
        self._attached = status.attached
        # A new attach starts the counters from zero: an older read is no baseline for them.
        self._previous = None
        if self._attached and not self._detail:
            self.switch_detail(False)
        return [status]

    def set_detail(self, on: bool) -> None:
        """The quiet tier (DetailSource) for sources that override `switch_detail`."""
        self._detail = on
        if self._attached:
            self.switch_detail(on)

    def switch_detail(self, on: bool) -> None:
        """Switch this attached source's detail programs; nothing by default."""

    def rebase(self) -> None:
        """Take the counters as they are now as the next interval's baseline: what a
        program counted up to its park (a few events between load and park) is left out
        of every interval, so a parked program's figures are zero throughout."""
        self._previous = self.probe.read()

    def collect(self, frame: SnapshotFrame) -> None:
        if not self._attached:
            return
        counts = self.read(frame)
        previous, self._previous = self._previous, counts
        self.write_interval(frame, previous, counts)

    def read(self, frame: SnapshotFrame) -> CountsT:
        return self.probe.read()

    def write_interval(self, frame: SnapshotFrame, previous: CountsT | None, counts: CountsT) -> None:
        raise NotImplementedError

    def detach(self) -> None:
        self.probe.detach()
        self._attached = False



class ParkingSource(ProbeSource[CountsT]):
    """A source whose whole program is detail: detached while quiet, since it runs on every
    event whatever happens (softirq, NAPI)."""

    def switch_detail(self, on: bool) -> None:
        if on:
            self.probe.unpark()
        else:
            try:
                self.probe.park()
            finally:
                self.rebase()

def write_stack_samples(frame: SnapshotFrame, previous, counts, prefix: str,
                        reason_of: Callable[[np.void], str],
                        frames_of: Callable[[tuple[int, ...]], tuple[str, ...]]) -> None:
    """Kernel stacks sampled since the previous read → StackSamples (one per pod, reason and
    frames: two stack ids of one interval may name the same frames); stacks the kernel could
    not record → `lost`; the sampler's counters → `stack_sampling`.

    previous/counts: probe readings with `stacks` (a StackFold), `stacks_lost` and `sampling`."""
    fold = counts.stacks
    merged: dict[tuple[int, str, tuple[str, ...]], list[int]] = {}
    for key, count, addresses in zip(fold.keys, fold.counts, fold.addresses):
        netns = int(key["netns_inode"])
        entry = merged.setdefault((netns, reason_of(key), frames_of(addresses)), [0, 0])
        entry[0] += int(count["events"])
        entry[1] += int(count["samples"])
    for (netns, reason, frames), (events, samples) in merged.items():
        frame.stacks.append(StackSample(pod=frame.label(netns), netns=netns, reason=reason, frames=frames,
                                        count=events, samples=samples))
    for slot, total in counts.stacks_lost.items():
        frame.lost[f"{prefix}_stacks_{slot}"] += total - (previous.stacks_lost[slot] if previous else 0)
    if counts.sampling is not None:
        frame.stack_sampling.update(counts.sampling.counters(previous.sampling if previous else None, prefix))
