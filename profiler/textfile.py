"""Writing `netprof serve --textfile` so that a write error never takes `serve` down.

node_exporter's textfile folder is somebody else's disk: it fills up, gets remounted
read-only, or is replaced by a file. A failed rewrite used to end `serve` with "internal
error" and take /metrics down with it. Now a failure is counted
(netprof_textfile_write_errors_total, on /metrics and in the textfile once it works again),
logged at most once per LOG_EVERY_S with how many were not logged, and the previous file
stays as it was (the rewrite is atomic: a temp file renamed over it), so node_exporter keeps
serving the last good numbers while the operator fixes the disk.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

LOG_EVERY_S = 60.0


class TextfileWriter:
    def __init__(self, path: Path, write: Callable[[], None], log: Callable[[str], None],
                 clock: Callable[[], float] = time.monotonic, wall_clock: Callable[[], float] = time.time,
                 log_every_s: float = LOG_EVERY_S):
        self.path = path
        self._write = write
        self._log = log
        self._clock = clock
        self._wall_clock = wall_clock
        self._log_every_s = log_every_s
        self._lock = threading.Lock()  # a scrape reads the counters while the loop writes
        self.errors_total = 0
        self.last_success_s: float | None = None  # wall-clock time of the last good write
        self._last_logged_at: float | None = None
        self._unlogged = 0
        self._failing = False

    def write(self) -> bool:
        """One rewrite; True when it worked. Never raises for an OSError."""
        try:
            self._write()
        except OSError as exc:
            with self._lock:
                self.errors_total += 1
            self._failed(exc)
            return False
        with self._lock:
            self.last_success_s = self._wall_clock()
        if self._failing:
            self._failing = False
            self._log(f"textfile {self.path}: written again after {self.errors_total} failed write(s) in all")
            self._last_logged_at, self._unlogged = None, 0
        return True

    def _failed(self, exc: OSError) -> None:
        self._failing = True
        now = self._clock()
        if self._last_logged_at is not None and now - self._last_logged_at < self._log_every_s:
            self._unlogged += 1
            return
        more = f" ({self._unlogged} more failure(s) not logged)" if self._unlogged else ""
        self._log(f"textfile {self.path}: write failed: {exc.strerror or exc}; keeping the last good file, "
                  f"still serving{more}")
        self._last_logged_at, self._unlogged = now, 0

    def collect(self) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
        """The prometheus_client collector surface: the writer's own health."""
        with self._lock:
            errors, last = self.errors_total, self.last_success_s
        yield CounterMetricFamily("netprof_textfile_write_errors",
                                  "failed rewrites of the --textfile (disk full, read-only, folder gone)",
                                  value=errors)
        if last is not None:
            yield GaugeMetricFamily("netprof_textfile_last_success_timestamp_seconds",
                                    "when the --textfile was last written successfully (Unix time)", value=last)
