"""Stopping a run from outside ends it as Ctrl-C does: KeyboardInterrupt, so every finally
block runs (a report written, a lab taken down)."""
from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def signals_as_interrupt() -> Iterator[None]:
    """SIGTERM (`kill`, a container runtime) and SIGINT raise KeyboardInterrupt inside the
    block. SIGINT explicitly: a process started with SIGINT ignored (a script's background
    job, nohup) inherits that, Python then leaves it ignored, and `kill -INT` did nothing."""

    def raise_interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = {signum: signal.signal(signum, raise_interrupt) for signum in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
