"""What netprof costs the node while it runs: kernel time in each of its BPF programs, and
the CPU and memory of its own process.

BPF run-time statistics. The kernel times every BPF program run (`run_time_ns`, `run_cnt`
in /proc/<pid>/fdinfo/<prog fd>) only while statistics are enabled, because timing costs
two clock reads per run. netprof turns them on for as long as a session runs, preferably
with the bpf(BPF_ENABLE_STATS) command (Linux 5.8+): it returns a file descriptor and the
statistics stay on until the last such descriptor closes, so they go off by themselves
when netprof exits or crashes, even on SIGKILL, and the `kernel.bpf_stats_enabled` sysctl
is never written (the kernel keeps the two switches apart: the sysctl reads back whatever
was written to it). Only where that command is missing does netprof write the sysctl, and
restores the value it found at stop, at interpreter exit, and on Ctrl-C/SIGTERM (which the
callers turn into exceptions); a SIGKILL leaves it on there, which is why it is the fallback.

Sampled timing. Two clock reads per program run are not free: measured here (bench/micro.py),
statistics add tens of nanoseconds to every run of every BPF program on the node, a fifth
or more of what netprof's hottest programs cost on their own. So a live session times its
first interval and then one in every `COST_SAMPLE_EVERY`: ns/event, events/s and CPU share
come from the timed intervals (`timed_s` of the capture), ordinary intervals of the same
traffic, and statistics are off the rest of the time.

Why so rarely, and why a fixed-length capture times all of it. Statistics are one static key
in the kernel: every switch patches kernel text on every CPU (an int3 breakpoint, IPIs to
all CPUs). Switching it while netprof's raw-tracepoint programs run crashed Debian's 6.12
kernel in a QEMU guest (docs/kernels.md: `Oops: int3` in bpf_trace_run1, at the key's own
site, within 200 switches; the same switches with no program attached, 3,000 of them, did
not). So statistics go on before the programs attach and off after they detach, and a
session switches them in between only where it must: `profile` (seconds to minutes) keeps
them on throughout (no switch while its programs run); the long-running views switch twice
every `COST_SAMPLE_EVERY` intervals, because their metrics need a timed interval in every
rate window and statistics always on cost every BPF program on the node.

Programs. `MeteredLoader` is the BpfLoader that remembers every program it loaded, so the
meter needs no help from the probes: each BCC object's functions (`bpf.funcs`) carry the
program fds, and the BCC function name says where it is attached
(`tracepoint__irq__softirq_entry` → `tracepoint:irq:softirq_entry`).
"""
from __future__ import annotations

import atexit
import ctypes
import os
import resource
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from .kernel.bpf_syscall import bpf
from .kernel.fentry import FUNCTION_PREFIX as FENTRY_FUNCTION_PREFIX
from .kernel.typed_tracepoint import FUNCTION_PREFIX as TYPED_FUNCTION_PREFIX
from .kernel.loader import BpfLoader
from .kernel.kernel_files import read_kernel_text

SYSCTL_PATH = Path("/proc/sys/kernel/bpf_stats_enabled")
BPF_ENABLE_STATS = 32       # enum bpf_cmd, Linux 5.8
BPF_STATS_RUN_TIME = 0      # enum bpf_stats_type

VIA_ENABLE_STATS = "bpf(BPF_ENABLE_STATS)"
# Time one interval in this many (1: every interval). Not rarer: `serve`'s metrics divide
# run time by timed seconds over 5-minute rate windows (docs/exports.md), which then need
# several timed intervals each; 300 left them empty.
COST_SAMPLE_EVERY = 10
VIA_SYSCTL = "sysctl kernel.bpf_stats_enabled"


@dataclass(frozen=True)
class ProgramRunStats:
    """Cumulative counters of one loaded BPF program (zero while statistics were off)."""

    prog_id: int
    run_time_ns: int
    run_count: int
    recursion_misses: int = 0  # runs the kernel skipped because one of ours was running (5.12+)


def parse_prog_fdinfo(text: str) -> ProgramRunStats | None:
    """The run counters in a BPF program's /proc/<pid>/fdinfo/<fd>; None for any other fd."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        name, sep, value = line.partition(":")
        if sep:
            fields[name.strip()] = value.strip()
    if "prog_id" not in fields:
        return None
    try:
        return ProgramRunStats(
            prog_id=int(fields["prog_id"]),
            # Kernels before 5.1 have no counters at all: report zeros rather than fail.
            run_time_ns=int(fields.get("run_time_ns", 0)),
            run_count=int(fields.get("run_cnt", 0)),
            recursion_misses=int(fields.get("recursion_misses", 0)),
        )
    except ValueError:
        return None


def read_prog_stats(fd: int, proc: Path = Path("/proc")) -> ProgramRunStats | None:
    try:
        return parse_prog_fdinfo(read_kernel_text(proc / "self/fdinfo" / str(fd)))
    except OSError:
        return None


def hook_of_function(name: str) -> str:
    """Where a BCC-named program is attached, from the name BCC gave it."""
    for prefix, kind in (("raw_tracepoint__", "raw_tracepoint"), ("tracepoint__", "tracepoint"),
                         (TYPED_FUNCTION_PREFIX, "tp_btf"), (FENTRY_FUNCTION_PREFIX, "fentry")):
        if name.startswith(prefix):
            rest = name[len(prefix):]
            if kind == "tracepoint":
                category, _, event = rest.partition("__")
                return f"tracepoint:{category}:{event}" if event else f"tracepoint:{rest}"
            return f"{kind}:{rest}"
    return name


class MeteredLoader(BpfLoader):
    """A BpfLoader that keeps a list of what it loaded, for the cost meter."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loaded: list[tuple[str, object]] = []  # (program name, bcc.BPF)

    def compile(self, program: str, cflags: Sequence[str] = ()):
        bpf = super().compile(program, cflags)
        self.loaded.append((program, bpf))
        return bpf


def loaded_program_fds(loaded: Iterable[tuple[str, object]]) -> list[tuple[str, str, int]]:
    """(program, hook, fd) of every program still loaded. A detached BCC object has no
    functions left (cleanup() closes and forgets them), so no stale fd is ever read."""
    fds = []
    for program, bpf in loaded:
        for name, function in list(getattr(bpf, "funcs", {}).items()):
            text = name.decode() if isinstance(name, bytes) else str(name)
            fds.append((program, hook_of_function(text), int(function.fd)))
    return fds


# -- switching the statistics on and off -----------------------------------------------------


def _enable_stats_fd() -> int:
    """bpf(BPF_ENABLE_STATS, {type: BPF_STATS_RUN_TIME}) → fd; raises OSError."""
    return bpf(BPF_ENABLE_STATS, ctypes.c_uint32(BPF_STATS_RUN_TIME))


class BpfStatsSwitch:
    """Keeps the kernel's BPF run-time statistics on between enable() and disable().

    Never raises: a kernel that refuses leaves `enabled` False and says why in `error`,
    and the capture's cost section then reports events and times as unavailable.
    """

    def __init__(self, sysctl_path: Path = SYSCTL_PATH,
                 enable_stats_fd=_enable_stats_fd):
        self.sysctl_path = sysctl_path
        self._enable_stats_fd = enable_stats_fd
        self._fd: int | None = None
        self._sysctl_original: str | None = None
        self.via: str | None = None
        self.error: str | None = None

    @property
    def enabled(self) -> bool:
        return self.via is not None

    def enable(self) -> None:
        if self.enabled:
            return
        try:
            self._fd = self._enable_stats_fd()
            self.via = VIA_ENABLE_STATS
            self.error = None
            return
        except OSError as exc:
            fd_error = f"BPF_ENABLE_STATS: {exc.strerror or exc}"
        try:
            original = read_kernel_text(self.sysctl_path).strip()
            if original != "1":
                self.sysctl_path.write_text("1\n")
                self._sysctl_original = original
                atexit.register(self.disable)
            self.via = VIA_SYSCTL
            self.error = None
        except OSError as exc:
            self.error = f"{fd_error}; {self.sysctl_path}: {exc.strerror or exc}"

    def disable(self) -> None:
        """Turn off what enable() turned on (only that); safe to call twice."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)
        if self._sysctl_original is not None:
            original, self._sysctl_original = self._sysctl_original, None
            try:
                self.sysctl_path.write_text(original + "\n")
            finally:
                atexit.unregister(self.disable)
        self.via = None

    def describe(self) -> dict:
        return {"enabled": self.enabled, "via": self.via, "error": self.error}


# -- readings and their differences ----------------------------------------------------------


@dataclass(frozen=True)
class ProcessUsage:
    """This process, all threads: CPU seconds since it started, and its memory."""

    user_cpu_s: float
    system_cpu_s: float
    rss_bytes: int
    peak_rss_bytes: int
    # The part of rss_bytes that is this process's own memory. The rest is file-backed,
    # mostly libbcc's embedded LLVM/clang, shared with every other BCC process and
    # reclaimable by the kernel.
    rss_anon_bytes: int = 0


def parse_status_memory(text: str) -> tuple[int, int]:
    """(VmRSS, RssAnon) in bytes from /proc/<pid>/status (0 where a line is missing)."""
    values = {}
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "RssAnon"):
            parts = rest.split()
            if parts and parts[0].isdigit():
                values[name] = int(parts[0]) * 1024  # the kernel writes kB
    return values.get("VmRSS", 0), values.get("RssAnon", 0)


def read_process_usage(proc: Path = Path("/proc")) -> ProcessUsage:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    try:
        rss, rss_anon = parse_status_memory(read_kernel_text(proc / "self/status"))
    except OSError:
        rss, rss_anon = 0, 0
    # ru_maxrss is in KiB on Linux.
    return ProcessUsage(usage.ru_utime, usage.ru_stime, rss, usage.ru_maxrss * 1024, rss_anon)


@dataclass(frozen=True)
class CostReading:
    """Cumulative counters at one instant; two readings give the cost in between."""

    at_s: float  # time.monotonic()
    programs: Mapping[tuple[str, str], ProgramRunStats]  # (program, hook) → counters
    process: ProcessUsage


@dataclass(frozen=True)
class ProgramCost:
    program: str           # the bpf/<program>.bpf.c it came from
    hook: str              # tracepoint:irq:softirq_entry, raw_tracepoint:sock_rcvqueue_full, ...
    events: int            # program runs
    run_time_ns: int       # kernel time inside the program (not the tracepoint's own dispatch)
    recursion_misses: int  # runs skipped because another program was running on that CPU

    @property
    def ns_per_event(self) -> float | None:
        return self.run_time_ns / self.events if self.events else None


@dataclass(frozen=True)
class Cost:
    duration_s: float
    programs: tuple[ProgramCost, ...]  # counted over the timed part of the duration only
    process_user_cpu_s: float
    process_system_cpu_s: float
    rss_bytes: int
    peak_rss_bytes: int
    online_cpus: int
    bpf_stats: Mapping[str, object] = field(default_factory=dict)  # BpfStatsSwitch.describe()
    rss_anon_bytes: int = 0
    timed_s: float = 0.0  # how much of duration_s had statistics on (program figures cover only that)

    @property
    def bpf_events(self) -> int:
        return sum(p.events for p in self.programs)

    @property
    def bpf_run_time_ns(self) -> int:
        return sum(p.run_time_ns for p in self.programs)

    def _percent_of_one_cpu(self, busy_s: float) -> float:
        return 100.0 * busy_s / self.duration_s if self.duration_s > 0 else 0.0

    def _percent_of_timed(self, busy_s: float) -> float:
        return 100.0 * busy_s / self.timed_s if self.timed_s > 0 else 0.0

    def to_json(self) -> dict:
        """CPU percentages are of ONE CPU (100 = a whole core, as `top` shows them);
        divide by online_cpus for the share of the node. Program rates and shares are over
        the timed part (timed_s); the process's over the whole duration."""
        timed_s = self.timed_s
        probes = []
        for p in sorted(self.programs, key=lambda p: (-p.run_time_ns, p.program, p.hook)):
            per_event = p.ns_per_event
            probes.append({
                "program": p.program,
                "hook": p.hook,
                "events": p.events,
                "events_per_s": round(p.events / timed_s, 1) if timed_s > 0 else 0.0,
                "run_time_ns": p.run_time_ns,
                "ns_per_event": round(per_event, 1) if per_event is not None else None,
                "cpu_percent": round(self._percent_of_timed(p.run_time_ns / 1e9), 4),
                "recursion_misses": p.recursion_misses,
            })
        total_cpu_s = self.process_user_cpu_s + self.process_system_cpu_s
        bpf_per_event = self.bpf_run_time_ns / self.bpf_events if self.bpf_events else None
        return {
            "duration_s": round(self.duration_s, 3),
            "timed_s": round(timed_s, 3),
            "online_cpus": self.online_cpus,
            "bpf_stats": dict(self.bpf_stats),
            "probes": probes,
            "bpf": {
                "events": self.bpf_events,
                "run_time_ns": self.bpf_run_time_ns,
                "events_per_s": round(self.bpf_events / timed_s, 1) if timed_s > 0 else 0.0,
                "ns_per_event": round(bpf_per_event, 1) if bpf_per_event is not None else None,
                "cpu_percent": round(self._percent_of_timed(self.bpf_run_time_ns / 1e9), 4),
            },
            "process": {
                "user_cpu_s": round(self.process_user_cpu_s, 4),
                "system_cpu_s": round(self.process_system_cpu_s, 4),
                "user_cpu_percent": round(self._percent_of_one_cpu(self.process_user_cpu_s), 3),
                "cpu_percent": round(self._percent_of_one_cpu(total_cpu_s), 3),
                "rss_bytes": self.rss_bytes,
                "rss_anon_bytes": self.rss_anon_bytes,
                "peak_rss_bytes": self.peak_rss_bytes,
            },
        }


def _counter_delta(before: int, after: int) -> int:
    # A program reloaded in between starts again from zero: its whole count is new.
    return after - before if after >= before else after


def _program_deltas(start: CostReading, end: CostReading) -> list[ProgramCost]:
    programs = []
    for key, now in end.programs.items():
        before = start.programs.get(key)
        if before is not None and before.prog_id != now.prog_id:
            before = None  # a different program under the same name: all of its count is new
        base = before or ProgramRunStats(now.prog_id, 0, 0, 0)
        programs.append(ProgramCost(
            program=key[0],
            hook=key[1],
            events=_counter_delta(base.run_count, now.run_count),
            run_time_ns=_counter_delta(base.run_time_ns, now.run_time_ns),
            recursion_misses=_counter_delta(base.recursion_misses, now.recursion_misses),
        ))
    return programs


def cost_between(start: CostReading, end: CostReading, online_cpus: int | None = None,
                 bpf_stats: Mapping[str, object] | None = None) -> Cost:
    """The cost from start to end, statistics on all along."""
    return cost_of_span(start, [end], [True], online_cpus, bpf_stats)


def cost_of_span(start: CostReading, readings: Sequence[CostReading], timed: Sequence[bool],
                 online_cpus: int | None = None, bpf_stats: Mapping[str, object] | None = None) -> Cost:
    """The cost over consecutive intervals: interval i runs from readings[i-1] (start for
    the first) to readings[i], and its programs' counters count only if timed[i] (statistics
    were on for all of it). The process's usage counts over the whole span."""
    end = readings[-1] if readings else start
    totals: dict[tuple[str, str], ProgramCost] = {}
    timed_s = 0.0
    previous = start
    for reading, was_timed in zip(readings, timed):
        if was_timed:
            timed_s += max(0.0, reading.at_s - previous.at_s)
            for program in _program_deltas(previous, reading):
                key = (program.program, program.hook)
                seen = totals.get(key)
                totals[key] = program if seen is None else ProgramCost(
                    program.program, program.hook, seen.events + program.events,
                    seen.run_time_ns + program.run_time_ns, seen.recursion_misses + program.recursion_misses)
        previous = reading
    for key in end.programs:  # programs never timed in this span still get a row
        totals.setdefault(key, ProgramCost(key[0], key[1], 0, 0, 0))
    duration_s = max(0.0, end.at_s - start.at_s)
    return Cost(
        duration_s=duration_s,
        programs=tuple(totals.values()),
        process_user_cpu_s=max(0.0, end.process.user_cpu_s - start.process.user_cpu_s),
        process_system_cpu_s=max(0.0, end.process.system_cpu_s - start.process.system_cpu_s),
        rss_bytes=end.process.rss_bytes,
        peak_rss_bytes=end.process.peak_rss_bytes,
        rss_anon_bytes=end.process.rss_anon_bytes,
        online_cpus=online_cpus if online_cpus is not None else (os.cpu_count() or 1),
        bpf_stats=dict(bpf_stats or {}),
        timed_s=min(timed_s, duration_s),
    )


def recursion_miss_key(program: str, hook: str) -> str:
    """The lost-events key of one program's skipped runs: which program, on which hook."""
    return f"{program}_recursion_misses:{hook}"


class RecursionMissCounter:
    """Runs of netprof's BPF programs that the kernel skipped, as lost events of each interval.

    While one of our programs runs on a CPU (or any BPF program, for the perf-event
    tracepoints), the kernel does not run another there: in a drop storm a kfree_skb that
    fires inside a softirq that interrupted our program is never counted, and the kernel
    only says how many (`recursion_misses` in the program's fdinfo, Linux 5.12+ for raw
    tracepoints, 6.7+ for the others). It counts them whether or not BPF run-time statistics
    are on, so unlike the `cost` section (which reads counters over its timed intervals only)
    this counts every interval, and the capture's `lost_events` — what every view shows as
    events not counted — includes them."""

    def __init__(self, loaded: Sequence[tuple[str, object]], proc: Path = Path("/proc")):
        self._loaded = loaded  # MeteredLoader.loaded: grows while sources attach
        self.proc = proc
        self._previous: dict[tuple[str, str], ProgramRunStats] = {}
        # Every program's counters as the last call read them: the cost meter takes them
        # from here (CostMeter.read), so each interval reads each fdinfo once, not twice.
        self.last_stats: Mapping[tuple[str, str], ProgramRunStats] = MappingProxyType({})

    def misses_since_last(self) -> dict[str, int]:
        """lost-events key → runs skipped since the previous call (since load, the first time)."""
        misses: dict[str, int] = {}
        stats = read_loaded_program_stats(self._loaded, self.proc)
        self.last_stats = MappingProxyType(stats)
        for (program, hook), now in stats.items():
            before = self._previous.get((program, hook))
            self._previous[(program, hook)] = now
            if before is not None and before.prog_id != now.prog_id:
                before = None  # reloaded: all of its count is new
            count = _counter_delta(before.recursion_misses if before else 0, now.recursion_misses)
            if count:
                key = recursion_miss_key(program, hook)
                misses[key] = misses.get(key, 0) + count
        return misses


class CostMeter:
    """Reads the counters of every program a MeteredLoader loaded, plus this process."""

    def __init__(self, loaded: Sequence[tuple[str, object]], proc: Path = Path("/proc")):
        self._loaded = loaded
        self.proc = proc

    def read(self, programs: Mapping[tuple[str, str], ProgramRunStats] | None = None) -> CostReading:
        """programs: the counters as just read elsewhere in this interval (the recursion
        miss counter's), instead of reading every fdinfo again."""
        if programs is None:
            programs = read_loaded_program_stats(self._loaded, self.proc)
        return CostReading(time.monotonic(), dict(programs), read_process_usage(self.proc))


def read_loaded_program_stats(loaded: Sequence[tuple[str, object]],
                              proc: Path = Path("/proc")) -> dict[tuple[str, str], ProgramRunStats]:
    """(program, hook) → counters of every program still loaded."""
    programs: dict[tuple[str, str], ProgramRunStats] = {}
    for program, hook, fd in loaded_program_fds(loaded):
        stats = read_prog_stats(fd, proc)
        if stats is not None:
            programs[(program, hook)] = stats
    return programs
