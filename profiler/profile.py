"""`netprof profile`: attach, sample every interval for a fixed time, detach, keep everything.

Ctrl-C or SIGTERM ends the capture early; what was captured up to then is kept and reported.
`ProfileSession` keeps the programs attached for several captures in a row (`fix --apply
--verify`: one before the changes, one or two after), so BCC compiles them once.
"""
from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .capture import Capture
from .detail_tier import TierSettings
from .errors import NetprofError
from .interrupts import signals_as_interrupt
from .live import LiveSession
from .snapshot import Snapshot
from .sources.base import Source


@dataclass(frozen=True)
class ProfileOptions:
    duration_s: float
    interval_s: float = 1.0
    tier: TierSettings = field(default_factory=TierSettings)   # the full tier, pinned


NOTHING_CAPTURED = "interrupted before the capture started; nothing was captured"


class ProfileSession:
    """One attach, any number of captures: each `capture()` holds only what happened during
    its own window. Attaching is the slow part of a capture (BCC compiles every program: a
    few seconds on a node, 60-90 s under emulation); a window costs only its duration."""

    def __init__(self, tier: TierSettings | None = None,
                 log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
                 root: Path = Path("/"), sources: list[Source] | None = None) -> None:
        self._tier = tier or TierSettings()
        self._log = log
        self._root = root
        self._sources = sources
        self._exit = contextlib.ExitStack()
        self._session: LiveSession | None = None

    def __enter__(self) -> "ProfileSession":
        self._exit.enter_context(signals_as_interrupt())
        return self

    def __exit__(self, *exc) -> None:
        self._exit.close()   # detaches, if anything was attached

    def start(self) -> LiveSession:
        """Compile and attach, the first time only: a run that needs no capture (`fix --from`
        without --verify) never touches the kernel."""
        if self._session is not None:
            return self._session
        # Statistics on from before attach to after detach: a capture never switches them
        # while its programs run (profiler/cost.py: each switch patches kernel text).
        session = self._exit.enter_context(
            LiveSession(root=self._root, sources=self._sources, tier=self._tier, cost_sample_every=1))
        try:
            session.start(self._log)
        except KeyboardInterrupt:
            raise NetprofError(NOTHING_CAPTURED) from None
        self._session = session
        return session

    def capture(self, duration_s: float, interval_s: float = 1.0,
                on_snapshot: Callable[[Snapshot], None] | None = None,
                until: Callable[[], bool] | None = None,
                on_started: Callable[[int, int], None] | None = None,
                on_attached: Callable[[], None] | None = None) -> Capture:
        """Sample every `interval_s` for `duration_s` from now (or until `until` first returns
        True at an interval's end) and return what this window saw; Ctrl-C ends it early and
        keeps it. on_started(attached, total) and on_attached() run as the window opens."""
        attached_before = self._session is not None
        session = self.start()
        try:
            if attached_before:
                # What the programs counted since attach or the last window (a fix being
                # applied) is read and dropped: each capture is its own window, from now.
                session.restart_window()
            self._log(f"capturing for {duration_s:g}s ({session.loader.mode}); "
                      "Ctrl-C ends early and still reports")
            if on_started:
                on_started(sum(1 for status in session.statuses if status.attached), len(session.statuses))
            if on_attached:
                on_attached()
        except KeyboardInterrupt:
            raise NetprofError(NOTHING_CAPTURED) from None
        interrupted = False
        deadline = time.monotonic() + duration_s
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                time.sleep(min(interval_s, remaining))
                done = until is not None and until()
                snapshot = session.sample(final=done or time.monotonic() >= deadline)
                if on_snapshot:
                    on_snapshot(snapshot)
                if done:
                    break
        except KeyboardInterrupt:
            interrupted = True
            # The counts since the last interval are still in the maps: keep them.
            session.sample(final=True)
        try:
            capture = session.capture()
        except KeyboardInterrupt:
            # A second Ctrl-C: the counts are what matter; leave node context and findings out.
            interrupted = True
            capture = session.capture(with_node=False)
        capture.interrupted = interrupted
        return capture


def run_profile(
    options: ProfileOptions,
    on_snapshot: Callable[[Snapshot], None] | None = None,
    on_attached: Callable[[], None] | None = None,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
    root: Path = Path("/"),
    sources: list[Source] | None = None,
    on_started: Callable[[int, int], None] | None = None,
    until: Callable[[], bool] | None = None,
) -> Capture:
    """Capture for `options.duration_s`, or, with `until`, until it first returns True at an
    interval's end (the duration then caps the capture): a lab run ends with its workload,
    however long a slow machine makes that. on_started(attached, total): the probes are in
    place and sampling begins."""
    with ProfileSession(options.tier, log=log, root=root, sources=sources) as session:
        return session.capture(options.duration_s, options.interval_s, on_snapshot=on_snapshot, until=until,
                               on_started=on_started, on_attached=on_attached)
