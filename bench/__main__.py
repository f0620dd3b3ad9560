"""`python -m bench` (or `make bench`): what netprof costs the node, as Markdown tables.

    python -m bench [--repeats N] [--duration S] [--sections micro,overhead,storm,scaling,tui]
                    [--configs none,floor,...] [--workloads bulk,rr,drop] [--pods 10,100,1000]
                    [--json results.json]

Defaults come from NETPROF_BENCH_REPEATS / NETPROF_BENCH_DURATION / NETPROF_BENCH_SECTIONS
when set. Progress goes to stderr, the tables to stdout. Needs root, BCC, iperf3 and
sockperf (`make bench-deps` installs the Debian packages). Everything it creates (lab
namespaces, idle namespaces, CPU groups, tracer processes) is removed on the way out, also
after Ctrl-C.
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

from profiler.interrupts import signals_as_interrupt

from .cpu import remove_leftover_groups
from .overhead import CONFIGS, run_overhead
from .table import against_table, anchors_table, contamination_notes, goal_table, hooks_table, overhead_table
from .workloads import missing_tools

DEFAULT_WORKLOADS = ("bulk", "rr", "drop")
SECTIONS = ("micro", "overhead", "storm", "scaling", "tui")


def _env_default(name: str, default: str) -> str:
    return os.environ.get(name) or default


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=int(_env_default("NETPROF_BENCH_REPEATS", "3")),
                        help="rounds of every configuration (default 3)")
    parser.add_argument("--duration", type=float, default=float(_env_default("NETPROF_BENCH_DURATION", "3")),
                        help="seconds of traffic per run (default 3)")
    parser.add_argument("--sections", default=_env_default("NETPROF_BENCH_SECTIONS", ",".join(SECTIONS)))
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--workloads", default=",".join(DEFAULT_WORKLOADS))
    parser.add_argument("--pods", default="10,100,1000", help="idle namespaces for the scaling section")
    parser.add_argument("--flows", default="100,1000,10000", help="map keys for the scaling section")
    parser.add_argument("--json", type=Path, default=None, help="also write every measurement here")
    return parser.parse_args(argv)


def preflight() -> list[str]:
    problems = []
    if os.geteuid() != 0:
        problems.append("run as root (the benchmark loads BPF programs and creates namespaces)")
    missing = missing_tools()
    if missing:
        problems.append(f"missing workload drivers: apt-get install {' '.join(missing)} (or `make bench-deps`)")
    try:
        import bcc  # noqa: F401
    except ImportError:
        problems.append("BCC's Python module is missing: apt-get install python3-bpfcc")
    return problems


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def header(args: argparse.Namespace) -> str:
    return (f"netprof overhead benchmark — {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}, "
            f"kernel {platform.release()}, {os.cpu_count()} CPUs, {args.repeats} rounds × {args.duration:g} s per run, "
            "configurations interleaved (order rotated every round)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problems = preflight()
    if problems:
        for problem in problems:
            log(f"bench: {problem}")
        return 2
    sections = [s for s in args.sections.split(",") if s]
    configs = [c for c in args.configs.split(",") if c]
    workloads = [w for w in args.workloads.split(",") if w]
    if "bcc-tools" in configs and shutil.which("softirqs-bpfcc") is None:
        log("bench: softirqs-bpfcc not found (apt-get install bpfcc-tools): leaving BCC's tools out")
        configs.remove("bcc-tools")
    for leftover in remove_leftover_groups():
        log(f"bench: removed a CPU group left by an earlier run: {leftover}")
    log_dir = Path(tempfile.mkdtemp(prefix="netprof-bench-"))
    log(f"bench: tracer logs in {log_dir}")
    started = time.monotonic()
    out: list[str] = [f"## {header(args)}"]
    raw: dict = {"args": {k: str(v) for k, v in vars(args).items()}}
    interrupted = False   # an interrupted overhead run still reports; later sections do not run

    try:
        if "micro" in sections:
            from .micro import micro_table, run_micro

            log("bench: micro (one tracepoint fired from a C loop)")
            micro = run_micro(max(args.repeats, 5), log)
            raw["micro"] = {name: result.ns_per_call for name, result in micro.items()}
            out.append("\n### Per-event cost of a tracepoint program, measured here")
            out.append(micro_table(micro))

        if "overhead" in sections:
            log("bench: overhead (every configuration, every workload, interleaved)")
            results = run_overhead(args.repeats, args.duration, log_dir, log, tuple(configs), tuple(workloads))
            raw["overhead"] = [dataclasses.asdict(r) for r in results.runs]
            raw["tracer_summaries"] = results.tracer_summaries
            out.append("\n### Overhead on the workload (CPU per unit of work; interleaved, paired by round)")
            out.append(overhead_table(results, configs, workloads, args.duration))
            goal, _ = goal_table(results, workloads)
            out.append("\n### The goal: netprof's added cost within 1.25× of the floor's")
            out.append(goal)
            out.append("\n### netprof against BCC's tools and the floors (issue 16, goal 1)")
            out.append(against_table(results, workloads))
            out.append("\n### Where the time goes: netprof's programs (BPF statistics, program time only)")
            out.append(hooks_table(results, workloads))
            for note in results.notes + contamination_notes(results):
                out.append(f"\nNote: {note}")
            interrupted = results.interrupted

        if "storm" in sections and not interrupted:
            from .storm import run_storm, storm_table

            log("bench: storm (drops and retransmits as fast as the lab makes them)")
            storm = run_storm(max(args.duration, 5.0), log_dir, log)
            raw["storm"] = storm
            out.append("\n### Storm: events handled, losses, responsiveness")
            out.append(storm_table(storm))

        if "scaling" in sections and not interrupted:
            from .scaling import flows_table, pods_table, run_flow_scaling, run_pod_scaling

            log("bench: scaling (pods, then map keys)")
            pods = run_pod_scaling([int(n) for n in args.pods.split(",") if n], log)
            flows = run_flow_scaling([int(n) for n in args.flows.split(",") if n], log)
            raw["scaling"] = {"pods": pods, "flows": flows}
            out.append("\n### Scaling with pods (idle network namespaces)")
            out.append(pods_table(pods))
            out.append("\n### Scaling with map keys (per-interval work of the sampler)")
            out.append(flows_table(flows))

        if "tui" in sections and not interrupted:
            from .tui import run_tui_cost, tui_table

            log("bench: tui (the live dashboard in a pseudo-terminal, each workload)")
            tui_workloads = ("idle", *(w for w in workloads if w != "idle"))  # idle once, first
            tui_runs = run_tui_cost(args.repeats, args.duration, log_dir, tui_workloads, log)
            raw["tui"] = [dataclasses.asdict(r) for r in tui_runs]
            out.append(tui_table(tui_runs, args.duration))
    except KeyboardInterrupt:
        # The section's finally blocks have run; the sections before it are in `out`.
        interrupted = True
        out.append("\nNote: interrupted; a section cut short is left out (an overhead run keeps its runs)")

    out.append("\n### Published anchors")
    out.append(anchors_table())
    out.append(f"\n_{time.monotonic() - started:.0f} s of benchmark; raw tracer logs in {log_dir}_")
    print("\n".join(out))
    if args.json:
        args.json.write_text(json.dumps(raw, indent=1, default=str))
    if interrupted:
        log("bench: interrupted; the tables above hold what was measured until then")
        return 130
    return 0


if __name__ == "__main__":
    try:
        # `kill` ends a run as Ctrl-C does: through the finally blocks that take down the
        # lab's namespaces, CPU groups and tracers (a SIGTERM'd run left its lab behind).
        with signals_as_interrupt():
            sys.exit(main())
    except KeyboardInterrupt:
        # The finally blocks have run by now: lab, CPU groups and tracers are gone.
        log("bench: interrupted; what it created is removed")
        sys.exit(130)
