"""Reads every source once per interval and freezes what they report into a Snapshot."""
from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from .cost import MeteredLoader, ProgramRunStats, RecursionMissCounter
from .kernel.loader import BpfLoader
from .errors import NetprofError
from .pods import PodDirectory
from .probes.base import ProbeStatus
from .snapshot import FULL_TIER, QUIET_TIER, Snapshot, SnapshotFrame
from .system.heap import return_freed_heap
from .sources.base import Source


def default_sources(pods: PodDirectory) -> list[Source]:
    """Every signal netprof knows. Sources that read per-netns counters get the directory
    to find and enter each pod's netns."""
    from .sources.conntrack import ConntrackSource
    from .sources.drops import DropSource
    from .sources.listen import ListenSource
    from .sources.napi import NapiSource
    from .sources.retransmits import RetransmitSource
    from .sources.softirq import SoftirqSource
    from .sources.softnet import SoftnetSource

    # In any order: sources exchange nothing but what is in the frame (SnapshotFrame).
    return [RetransmitSource(), DropSource(), ListenSource(pods), SoftirqSource(), NapiSource(),
            SoftnetSource(), ConntrackSource(pods)]


class Sampler:
    def __init__(self, pods: PodDirectory, sources: Sequence[Source] | None = None, proc: Path = Path("/proc")):
        self.pods = pods
        self.proc = proc  # where the loaded programs' fdinfo is read
        self.sources = list(sources) if sources is not None else default_sources(pods)
        self.statuses: list[ProbeStatus] = []
        self._last_read_s: float | None = None
        self._misses: RecursionMissCounter | None = None
        # The detail tier (profiler/detail_tier.py): whether the sources' detail programs run.
        self.detail_on = True

    def set_detail(self, on: bool) -> list[str]:
        """Switch every source's detail programs on or off (before attach: how they start).
        Returns what could not be switched on, one line per source; those stay off."""
        self.detail_on = on
        problems = []
        for source in self.sources:
            set_detail = getattr(source, "set_detail", None)  # DetailSource: optional
            if set_detail is None:
                continue
            try:
                set_detail(on)
            except NetprofError as exc:
                problems.append(f"{source.name}: {exc}")
        return problems

    def attach(self, loader: BpfLoader) -> list[ProbeStatus]:
        self.statuses = []
        for source in self.sources:
            self.statuses.extend(source.attach(loader))
        # A loader that lists its programs lets every interval count the runs the kernel
        # skipped, into the same lost events as full maps (profiler/cost.py says why).
        self._misses = RecursionMissCounter(loader.loaded, self.proc) if isinstance(loader, MeteredLoader) else None
        # The compiler's freed memory, back to the kernel before a long run (system/heap.py).
        return_freed_heap()
        self._open_window()
        return self.statuses

    def _open_window(self) -> None:
        """Read and drop what the programs counted before every one of them was in place.

        Sources attach one after another, and each compiles first: the first program counts
        while the others compile, seconds on a node (a minute in a 6.1 guest under
        emulation). Left in the maps, those counts went into the first interval, whose span
        starts after the last attach, so its rates came out many times too high: a capture in
        a guest reported 232,848 CPU_BACKLOG drops/s from a sender of 10,000 datagrams/s.
        Not a final read, as between two captures (LiveSession.restart_window)."""
        self._last_read_s = time.monotonic()
        self.sample()

    @property
    def program_stats(self) -> Mapping[tuple[str, str], ProgramRunStats] | None:
        """Every program's run counters as the last sample read them (None when this loader
        lists no programs): the cost meter's, without a second read."""
        return self._misses.last_stats if self._misses is not None else None

    @property
    def any_attached(self) -> bool:
        return any(status.attached for status in self.statuses)

    def sample(self, final: bool = False) -> Snapshot:
        """What changed since the previous call (or since attach). `final`: the capture ends
        with this interval, so every source reads everything it has (see SnapshotFrame.final)."""
        started = self._last_read_s if self._last_read_s is not None else time.monotonic()
        frame = SnapshotFrame(started, self.pods.label, final=final,
                              tier=FULL_TIER if self.detail_on else QUIET_TIER)
        for source in self.sources:
            source.collect(frame)
        if self._misses is not None:
            frame.lost.update(self._misses.misses_since_last())
        ended = time.monotonic()
        self._last_read_s = ended
        return frame.freeze(ended)

    def detach(self) -> None:
        for source in self.sources:
            source.detach()
