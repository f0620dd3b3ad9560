"""What the live dashboard costs: `netprof` (the Textual TUI, live, default refresh) in a
pseudo-terminal of a fixed size, its process's CPU and memory while each workload runs
between two lab pods (issue 16, goal 5: the TUI at most 5% of one CPU).

The TUI runs in its own CPU group, so its CPU is the scheduler's run-time accounting of
all its threads (bench/cpu.py); its terminal output is read and thrown away as fast as it
comes, as a terminal would. Memory is read from /proc/<pid>/status at the end of each run:
VmRSS and RssAnon (the anonymous part: what the process allocated, not the libraries mapped).
"""
from __future__ import annotations

import fcntl
import os
import pty
import select
import signal
import struct
import sys
import termios
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from profiler.lab.topology import Lab

from .cpu import CpuGroup
from .procs import REPO, memory_bytes
from .workloads import Workloads

TERMINAL_SIZE = (50, 160)   # rows, columns: a large terminal draws the most
READY_TIMEOUT_S = 120.0
# After the dashboard first shows the probe count: let the first intervals (startup work)
# pass before anything is measured.
SETTLE_S = 3.0
READY_MARK = b"probes "


@dataclass
class TuiRun:
    round_index: int
    workload: str
    seconds: float
    tui_cpu_ns: int
    rss_bytes: int
    anon_bytes: int
    rate: float

    @property
    def cpu_percent(self) -> float:
        return 100 * self.tui_cpu_ns / (self.seconds * 1e9) if self.seconds else 0.0


class LiveDashboard:
    """`netprof` in a pseudo-terminal, inside a CPU group; `stop()` quits it with q."""

    def __init__(self, group: CpuGroup, log_dir: Path):
        self.group = group
        self.log_path = log_dir / f"tui.{int(time.time() * 1000)}.out"
        self.pid = 0
        self._fd = -1
        self._seen = bytearray()
        self._ready = threading.Event()
        self._drain: threading.Thread | None = None

    def start(self) -> None:
        pid, fd = pty.fork()
        if pid == 0:  # the child: the dashboard, as an operator starts it
            try:
                self.group.join_self()
                os.environ.update({"TERM": "xterm-256color", "PYTHONPATH": str(REPO)})
                os.chdir(REPO)
                os.execv(sys.executable, [sys.executable, "-m", "profiler.cli"])
            finally:
                os._exit(127)
        self.pid, self._fd = pid, fd
        rows, columns = TERMINAL_SIZE
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        self._drain = threading.Thread(target=self._read_all, daemon=True)
        self._drain.start()
        if not self._ready.wait(READY_TIMEOUT_S):
            self.stop()
            raise RuntimeError(f"the dashboard did not show its probes in {READY_TIMEOUT_S:.0f} s "
                               f"(its output: {self.log_path})")
        time.sleep(SETTLE_S)

    def _read_all(self) -> None:
        with self.log_path.open("wb") as log:
            while True:
                try:
                    readable, _, _ = select.select([self._fd], [], [], 0.5)
                    if not readable:
                        continue
                    chunk = os.read(self._fd, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                if not self._ready.is_set():
                    self._seen += chunk
                    log.write(chunk)
                    if READY_MARK in self._seen:
                        self._ready.set()

    def stop(self) -> None:
        if not self.pid:
            return
        try:
            os.write(self._fd, b"q")
        except OSError:
            pass
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done, _ = os.waitpid(self.pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.2)
        else:
            os.kill(self.pid, signal.SIGTERM)
            os.waitpid(self.pid, 0)
        os.close(self._fd)
        self.pid = 0


def run_tui_cost(repeats: int, duration_s: float, log_dir: Path, workloads: tuple[str, ...],
                 log=print) -> list[TuiRun]:
    runs: list[TuiRun] = []
    with Lab.up(["server", "client"]) as lab:
        work = Workloads(lab, server_cpu=1, client_cpu=0)
        for round_index in range(repeats):
            with CpuGroup("tui") as group:
                dashboard = LiveDashboard(group, log_dir)
                dashboard.start()
                try:
                    for workload in workloads:
                        before = group.usage_ns()
                        if workload == "idle":
                            started = time.monotonic()
                            time.sleep(duration_s)
                            seconds, rate = time.monotonic() - started, 0.0
                        else:
                            result = work.run(workload, duration_s)
                            seconds, rate = result.seconds, result.rate
                        cpu_ns = group.usage_ns() - before
                        rss, anon = memory_bytes(dashboard.pid)
                        run = TuiRun(round_index, workload, seconds, cpu_ns, rss, anon, rate)
                        runs.append(run)
                        log(f"  round {round_index + 1}/{repeats} tui {workload:<5} cpu {run.cpu_percent:5.2f}% "
                            f"RSS {rss / 2**20:.0f} MiB (anon {anon / 2**20:.0f})")
                finally:
                    dashboard.stop()
    return runs


def tui_table(runs: list[TuiRun], duration_s: float) -> str:
    from .overhead import spread

    lines = [f"\n### The live dashboard's own cost (`netprof`, {TERMINAL_SIZE[1]}×{TERMINAL_SIZE[0]} terminal, "
             f"default refresh; {duration_s:g} s per workload)",
             "| workload | TUI process CPU % of one CPU: median (min–max) | RSS MiB | anonymous RSS MiB | rounds |",
             "|---|---|---|---|---|"]
    for workload in dict.fromkeys(r.workload for r in runs):
        mine = [r for r in runs if r.workload == workload]
        cpu = spread([r.cpu_percent for r in mine])
        rss = spread([r.rss_bytes / 2**20 for r in mine])
        anon = spread([r.anon_bytes / 2**20 for r in mine])
        lines.append(f"| {workload} | {cpu.format(2)} | {rss.format(0)} | {anon.format(0)} | {len(mine)} |")
    return "\n".join(lines)
