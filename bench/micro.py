"""Per-event cost of being on a tracepoint, measured here, to read the published anchor
(an empty program on a tracepoint ≈12.6 ns/event) against.

A C loop (bench/c/trigger.c, compiled at run time with gcc) fires syscalls:sys_enter_getppid
as fast as one pinned thread can; the time per call with a program attached minus the time
without is what one event costs. Programs: empty (the floor), a per-CPU counter (the
least a counting probe does), each with BPF run-time statistics off and on (what netprof's
cost measurement adds to every program run while it is on). Interleaved and repeated.

The first program on any syscall tracepoint also switches the task's syscalls onto the
traced slow path, so this is the syscall-tracepoint flavour of the floor; the softirq and
NAPI tracepoints netprof lives on are measured in the workload section instead.

The syscall tax: the same loop while an empty program sits on syscalls:sys_enter_listen,
which getppid never fires (bench/bpf/syscall_tax.bpf.c). Whatever getppid then costs more
is what every syscall of every process on the node pays while netprof's listen probe is on
that tracepoint; beside it the same program as fentry on __sys_listen, the hook the probe
takes where the kernel allows it (profiler/kernel/fentry.py), where it loads.
"""
from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from profiler.cost import BpfStatsSwitch, loaded_program_fds, read_prog_stats
from profiler.kernel.btf import Btf
from profiler.kernel.fentry import attach_fentry, fentry_refusal

from .tracers import BPF_DIR, compile_with_shim

TRIGGER_C = Path(__file__).parent / "c" / "trigger.c"
CALLS = 2_000_000
CPU = "1"
VARIANTS = ("none", "empty", "empty+stats", "count", "count+stats")
# The syscall tax (module docstring): getppid timed beside a program on another syscall's hook.
TAX_VARIANTS = ("listen-tracepoint", "listen-fentry")
LISTEN_FUNCTION = "__sys_listen"
LABELS = {
    "listen-tracepoint": "none; an empty program on syscalls:sys_enter_listen (the syscall tax)",
    "listen-fentry": "none; an empty fentry program on __sys_listen",
}


@dataclass(frozen=True)
class MicroResult:
    variant: str
    ns_per_call: list[float]
    program_ns_per_event: list[float]  # what BPF statistics say the program took (+stats only)

    @property
    def median(self) -> float:
        return statistics.median(self.ns_per_call)


def build_trigger(workdir: Path) -> Path:
    if shutil.which("gcc") is None:
        raise RuntimeError("gcc is needed to build bench/c/trigger.c")
    binary = workdir / "trigger"
    subprocess.run(["gcc", "-O2", "-o", str(binary), str(TRIGGER_C)], check=True)
    return binary


def _time_calls(binary: Path, calls: int) -> float:
    out = subprocess.run(["taskset", "-c", CPU, str(binary), str(calls)], check=True,
                         capture_output=True, text=True).stdout
    return float(out.strip())


def run_micro(repeats: int, log=print, calls: int = CALLS) -> dict[str, MicroResult]:
    variants = VARIANTS + TAX_VARIANTS
    listen_btf_id = Btf.from_file().function_type_id(LISTEN_FUNCTION)
    refused = fentry_refusal(LISTEN_FUNCTION, listen_btf_id)
    if refused:
        log(f"  micro: no listen-fentry variant: {refused}")
        variants = tuple(v for v in variants if v != "listen-fentry")
    samples: dict[str, list[float]] = {v: [] for v in variants}
    program_ns: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory(prefix="netprof-bench-micro-") as workdir:
        binary = build_trigger(Path(workdir))
        empty = compile_with_shim(BPF_DIR / "trigger.bpf.c")
        empty.cleanup()
        for round_index in range(repeats):
            order = variants[round_index % len(variants):] + variants[:round_index % len(variants)]
            for variant in order:
                program = None
                stats = BpfStatsSwitch()
                try:
                    if variant == "listen-tracepoint":
                        program = compile_with_shim(BPF_DIR / "syscall_tax.bpf.c")
                    elif variant == "listen-fentry":
                        program = compile_with_shim(BPF_DIR / "syscall_tax.bpf.c", ["-DTAX_FENTRY"])
                        attach_fentry(program, LISTEN_FUNCTION, listen_btf_id)
                    elif variant != "none":
                        cflags = ["-DTRIGGER_COUNT"] if variant.startswith("count") else []
                        program = compile_with_shim(BPF_DIR / "trigger.bpf.c", cflags)
                    if variant.endswith("+stats"):
                        stats.enable()
                    before = _program_counters(program)
                    samples[variant].append(_time_calls(binary, calls))
                    if variant.endswith("+stats"):
                        after = _program_counters(program)
                        if after[1] > before[1]:
                            program_ns[variant].append((after[0] - before[0]) / (after[1] - before[1]))
                finally:
                    stats.disable()
                    if program is not None:
                        program.cleanup()
            log(f"  micro round {round_index + 1}/{repeats}: "
                + ", ".join(f"{v} {samples[v][-1]:.1f}" for v in variants))
    return {v: MicroResult(v, samples[v], program_ns[v]) for v in variants}


def _program_counters(program) -> tuple[int, int]:
    """(run_time_ns, run_cnt) of a loaded trigger program ((0, 0) for none)."""
    if program is None:
        return 0, 0
    for _, _, fd in loaded_program_fds([("trigger", program)]):
        stats = read_prog_stats(fd)
        if stats is not None:
            return stats.run_time_ns, stats.run_count
    return 0, 0


def micro_table(results: dict[str, MicroResult]) -> str:
    base = results["none"].median
    best = min(results["none"].ns_per_call)
    lines = ["| program on syscalls:sys_enter_getppid | ns per call: median (min–max) | added ns/event: median "
             "| added: best of runs | program time per event, by BPF statistics |", "|---|---|---|---|---|"]
    for variant in (v for v in VARIANTS + TAX_VARIANTS if v in results):
        result = results[variant]
        added = "–" if variant == "none" else f"{result.median - base:.1f}"
        added_best = "–" if variant == "none" else f"{min(result.ns_per_call) - best:.1f}"
        program = f"{statistics.median(result.program_ns_per_event):.1f}" if result.program_ns_per_event else "–"
        lines.append(f"| {LABELS.get(variant, variant)} | {result.median:.1f} ({min(result.ns_per_call):.1f}–{max(result.ns_per_call):.1f}) "
                     f"| {added} | {added_best} | {program} |")
    return "\n".join(lines)
