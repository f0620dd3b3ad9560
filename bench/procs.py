"""Tracer processes: start one in its own CPU group, wait until it is attached, read its
BPF programs' counters from outside, stop it and collect what it printed."""
from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from profiler.cost import ProgramRunStats, parse_prog_fdinfo

from .cpu import CpuGroup, file_name_part

REPO = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 60.0


def bpf_programs_of(pid: int) -> dict[int, ProgramRunStats]:
    """prog_id → counters of every BPF program a process holds an fd of."""
    programs: dict[int, ProgramRunStats] = {}
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        fds = list(fd_dir.iterdir())
    except OSError:
        return programs
    for fd in fds:
        try:
            if os.readlink(fd) != "anon_inode:bpf-prog":
                continue
            stats = parse_prog_fdinfo(Path(f"/proc/{pid}/fdinfo/{fd.name}").read_text())
        except OSError:
            continue
        if stats is not None:
            programs[stats.prog_id] = stats
    return programs


def memory_bytes(pid: int) -> tuple[int, int]:
    """(VmRSS, RssAnon) of a process: all it has resident, and the anonymous part of that
    (what it allocated itself, without the files and libraries it maps, e.g. libLLVM)."""
    found = {"VmRSS:": 0, "RssAnon:": 0}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key = line.split(":", 1)[0] + ":"
            if key in found:
                found[key] = int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return found["VmRSS:"], found["RssAnon:"]


def rss_bytes(pid: int) -> int:
    return memory_bytes(pid)[0]


@dataclass
class TracerProcess:
    name: str
    argv: list[str]
    ready_line: str | None = None   # None: the tracer's first JSON line with "ready"
    env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen | None = None
    ready: dict = field(default_factory=dict)
    output: list[str] = field(default_factory=list)
    stderr_path: Path | None = None
    tree: Path = REPO               # the checkout the tracer runs from

    def start(self, group: CpuGroup, log_dir: Path) -> None:
        self.stderr_path = log_dir / f"{file_name_part(self.name)}.{int(time.time() * 1000)}.stderr"
        env = {**os.environ, **self.env, "PYTHONPATH": str(self.tree)}
        self.process = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=self.stderr_path.open("w"),
                                        text=True, cwd=self.tree, env=env, preexec_fn=group.join_self)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tracer {self.name} exited during start: {self._stderr_tail()}")
            readable, _, _ = select.select([self.process.stdout], [], [], 0.2)
            if not readable:
                continue
            line = self.process.stdout.readline()
            if not line:
                continue
            self.output.append(line)
            if self.ready_line is not None:
                if self.ready_line in line:
                    return
                continue
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if doc.get("ready"):
                self.ready = doc
                return
        raise RuntimeError(f"tracer {self.name} not ready after {READY_TIMEOUT_S:g}s: {self._stderr_tail()}")

    def _stderr_tail(self) -> str:
        try:
            return " | ".join(self.stderr_path.read_text().strip().splitlines()[-5:])
        except (OSError, AttributeError):
            return "no stderr"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def stop(self) -> dict:
        """SIGINT, wait, and the last JSON line it printed ({} for tools that print none)."""
        if self.process is None:
            return {}
        process, self.process = self.process, None
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        try:
            rest, _ = process.communicate(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            rest, _ = process.communicate()
        self.output.extend((rest or "").splitlines())
        for line in reversed(self.output):
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict) and not doc.get("ready"):
                return doc
        return {}


def python_tracer(name: str) -> TracerProcess:
    """`name`, or `name@DIR`: the same tracer from another checkout of netprof (its own
    .venv), e.g. `netprof@/tmp/base` beside `netprof` to measure a change in one interleaved
    run."""
    tracer, _, tree = name.partition("@")
    if not tree:
        return TracerProcess(name, [sys.executable, "-m", "bench.tracers", name])
    root = Path(tree).resolve()
    python = root / ".venv" / "bin" / "python"
    if not (root / "bench" / "tracers.py").is_file() or not python.is_file():
        raise SystemExit(f"bench: {name}: {root} is not a netprof checkout with a .venv (./bootstrap.sh setup there)")
    return TracerProcess(name, [str(python), "-m", "bench.tracers", tracer], tree=root)


def bcc_softirqs_tracer(shim: str) -> TracerProcess:
    # Stock tool, unmodified: BCC_KERNEL_SOURCE points it at netprof's header shim.
    return TracerProcess("bcc-softirqs", ["softirqs-bpfcc", "1"], ready_line="Tracing soft irq",
                         env={"BCC_KERNEL_SOURCE": shim})
