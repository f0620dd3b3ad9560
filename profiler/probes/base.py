"""What every probe module exposes: attach, read, detach — and an honest status."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from ..kernel.loader import BpfLoader


@dataclass(frozen=True)
class ProbeStatus:
    """One row of the capture's `probes` list: what was tried, how, and why not."""

    name: str
    attached: bool
    via: str
    error: str | None = None

    def to_json(self) -> dict:
        return {"name": self.name, "attached": self.attached, "via": self.via, "error": self.error}


class Probe(Protocol):
    name: str

    def attach(self, loader: BpfLoader) -> ProbeStatus:
        """Load and attach; never raises for an unsupported kernel, reports it instead."""

    def read(self) -> Any:
        """Cumulative counters since attach, as typed numpy arrays / dataclasses."""

    def detach(self) -> None:
        """Release every kernel resource; safe to call twice or after a failed attach."""
