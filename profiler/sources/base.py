from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from ..kernel.loader import BpfLoader
from ..probes.base import Probe, ProbeStatus
from ..snapshot import SnapshotFrame


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
