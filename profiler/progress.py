"""`netprof profile`'s progress on a terminal: elapsed, events so far, probes attached.

One line on stderr, rewritten in place each interval and erased at the end, so neither the
report on stdout nor a redirected stderr ever holds it (nothing is drawn when stderr is not
a terminal). Events are counted by the capture's own definition (`events_counted`), the
figure the TUI's header shows per second.
"""
from __future__ import annotations

import sys
import time
from typing import TextIO

from .capture import cpu_json, events_counted, pod_json
from .snapshot import Snapshot


class ProgressLine:
    def __init__(self, duration_s: float, stream: TextIO | None = None, clock=time.monotonic):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = _isatty(self.stream)
        self.duration_s = duration_s
        self._clock = clock
        self._started = clock()
        self.events = 0
        self.attached = "?"

    def started(self, attached: int, total: int) -> None:
        self._started = self._clock()
        self.attached = f"{attached}/{total}"
        self._draw()

    def snapshot(self, snapshot: Snapshot) -> None:
        self.events += events_counted({"pods": [pod_json(pod) for pod in snapshot.pods],
                                       "cpus": [cpu_json(cpu) for cpu in snapshot.cpus],
                                       "ignored_events": dict(snapshot.ignored)})
        self._draw()

    def text(self) -> str:
        elapsed = min(self._clock() - self._started, self.duration_s)
        return (f"capturing {elapsed:.0f}/{self.duration_s:g}s · {self.events:,} events · "
                f"probes {self.attached} attached · Ctrl-C ends early")

    def _draw(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[2K" + self.text())
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
