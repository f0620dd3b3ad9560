from __future__ import annotations

from typing import Protocol

from ..kernel.loader import BpfLoader
from ..probes.base import ProbeStatus
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
