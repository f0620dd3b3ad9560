"""`netprof profile`: attach, sample every interval for a fixed time, detach, keep everything.

Ctrl-C or SIGTERM ends the capture early; what was captured up to then is kept and reported.
"""
from __future__ import annotations

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
    # Statistics on from before attach to after detach: a one-shot capture never switches
    # them while its programs run (profiler/cost.py: each switch patches kernel text).
    session = LiveSession(root=root, sources=sources, tier=options.tier, cost_sample_every=1)
    with signals_as_interrupt(), session:
        try:
            statuses = session.start(log)
            log(f"capturing for {options.duration_s:g}s ({session.loader.mode}); "
                "Ctrl-C ends early and still reports")
            if on_started:
                on_started(sum(1 for status in statuses if status.attached), len(statuses))
            if on_attached:
                on_attached()
        except KeyboardInterrupt:
            raise NetprofError("interrupted before the capture started; nothing was captured") from None
        interrupted = False
        deadline = time.monotonic() + options.duration_s
        try:
            while (remaining := deadline - time.monotonic()) > 0:
                time.sleep(min(options.interval_s, remaining))
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
