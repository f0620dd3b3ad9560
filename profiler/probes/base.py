"""What every probe module exposes: attach, read, detach — and an honest status."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

from ..errors import NetprofError
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


class TracepointParking:
    """Detach a loaded program's tracepoints and attach them again later, without compiling
    or loading anything (the quiet detail tier, profiler/detail_tier.py). Parked, the
    program costs the kernel nothing: no run on any event. Its maps stay, so cumulative
    counters read while parked simply do not move.

    `tracepoints`: "category:event" names whose functions BCC named tracepoint__<cat>__<event>
    (TRACEPOINT_PROBE). `raw_tracepoints`: event names whose functions BCC named
    raw_tracepoint__<event> (RAW_TRACEPOINT_PROBE). `problem`: asked before attaching
    tracepoints again, since BCC opens their id files itself (BpfLoader.tracepoints_problem);
    raw tracepoints are attached by name, with no tracefs file."""

    def __init__(self, bpf, tracepoints: tuple[str, ...], problem: Callable[[list[str]], str | None],
                 forget: tuple[bytes, ...] = (), raw_tracepoints: tuple[str, ...] = ()):
        """`forget`: maps of per-CPU state cleared before attaching again, state that a
        pause makes stale (a timestamp, a cached pointer)."""
        self._bpf = bpf
        self._tracepoints = tracepoints
        self._raw_tracepoints = raw_tracepoints
        self._problem = problem
        self._forget = forget
        self.parked = False

    def _hooks(self):
        """Each hook as (its name in an error, the key BCC files it under, BCC's table of
        attached ones, attach, detach)."""
        bpf = self._bpf
        for tracepoint in self._tracepoints:
            category, event = tracepoint.split(":")
            yield (tracepoint, tracepoint.encode(), bpf.tracepoint_fds,
                   lambda key, fn=f"tracepoint__{category}__{event}".encode(): bpf.attach_tracepoint(tp=key, fn_name=fn),
                   bpf.detach_tracepoint)
        for event in self._raw_tracepoints:
            yield (f"raw_tracepoint:{event}", event.encode(), bpf.raw_tracepoint_fds,
                   lambda key, fn=f"raw_tracepoint__{event}".encode(): bpf.attach_raw_tracepoint(tp=key, fn_name=fn),
                   bpf.detach_raw_tracepoint)

    def _detach_all(self) -> list[str]:
        failed = []
        for name, key, attached, _, detach in self._hooks():
            if key in attached:
                try:
                    detach(key)
                except Exception as exc:  # BCC raises bare Exception when a detach fails
                    failed.append(f"{name}: {exc}")
        return failed

    def park(self) -> None:
        """Detach every tracepoint; raises NetprofError if the kernel refuses one (the
        others are detached all the same, and the program counts as parked)."""
        if self.parked:
            return
        failed = self._detach_all()
        self.parked = True
        if failed:
            raise NetprofError(f"detaching failed: {'; '.join(failed)}")

    def unpark(self) -> None:
        """Attach every tracepoint again; on failure, leave them all detached and raise
        NetprofError (the program stays parked)."""
        if not self.parked:
            return
        if self._tracepoints:
            problem = self._problem([tracepoint.replace(":", "/") for tracepoint in self._tracepoints])
            if problem:
                raise NetprofError(f"not attaching again: {problem}")
        for table in self._forget:
            self._bpf[table].clear()
        for name, key, _, attach, _ in self._hooks():
            try:
                attach(key)
            except Exception as exc:  # BCC raises bare Exception when an attach fails
                self._detach_all()
                raise NetprofError(f"attaching {name} again failed: {exc}") from None
        self.parked = False


class ParkableProbe:
    """park()/unpark() for a probe whose attach() sets `_parking` (the quiet tier); a probe
    that did not attach has nothing to park."""

    _parking: TracepointParking | None = None

    @property
    def parked(self) -> bool:
        return self._parking is not None and self._parking.parked

    def park(self) -> None:
        """Detach the program's tracepoints; counters stay readable, unmoving."""
        if self._parking is not None:
            self._parking.park()

    def unpark(self) -> None:
        """Attach again (raises NetprofError; the program then stays parked)."""
        if self._parking is not None:
            self._parking.unpark()
