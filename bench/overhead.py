"""The overhead section: every tracer configuration against the same workloads, interleaved
and repeated in one process, each compared with "no tracing" of the same round."""
from __future__ import annotations

import math
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from profiler.kernel.shim import ensure_shim
from profiler.lab.topology import Lab

from .cpu import CpuGroup
from .procs import TracerProcess, bcc_softirqs_tracer, bpf_programs_of, memory_bytes, python_tracer
from .tracers import FLOOR_HOOKS, hook_event
from .workloads import WorkResult, Workloads

CONFIGS = ("none", "floor", "floor-raw", "netprof", "netprof-stats", "bcc-tools")
# Also known: "netprof-nostats" (cost measurement off altogether), "netprof-quiet" and
# "netprof-auto" (the detail tiers, profiler/detail_tier.py).
WORKLOADS = ("bulk", "rr", "drop")


@dataclass
class Run:
    config: str
    round: int
    workload: str
    result: WorkResult
    tracer_cpu_ns: int = 0             # the tracer processes' own CPU during the workload
    tracer_rss_bytes: int = 0
    tracer_anon_rss_bytes: int = 0
    events: dict[str, int] = field(default_factory=dict)        # hook → program runs (by fdinfo)
    run_time_ns: dict[str, int] = field(default_factory=dict)   # hook → time in the program (stats on)

    @property
    def others_cpu_percent(self) -> float:
        """How busy everyone else kept the node meanwhile, in % of all its CPUs."""
        wall = self.result.wall_s
        if wall <= 0:
            return 0.0
        others = self.result.node_busy_ns - self.result.cpu_ns - self.tracer_cpu_ns - self.result.ksoftirqd_ns
        return max(0.0, 100 * others / (wall * 1e9 * (os.cpu_count() or 1)))


@dataclass
class OverheadResults:
    runs: list[Run] = field(default_factory=list)
    tracer_summaries: dict[str, list[dict]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    interrupted: bool = False   # Ctrl-C or SIGTERM: `runs` holds what was measured until then


def tracers_for(config: str) -> list[TracerProcess]:
    if config == "none":
        return []
    if config == "bcc-tools":
        return [bcc_softirqs_tracer(str(ensure_shim())), python_tracer("bcc-ports")]
    return [python_tracer(config)]


def hooks_by_prog_id(tracers: list[TracerProcess]) -> dict[int, str]:
    """prog_id → hook for the tracers that said which programs are theirs (netprof, floor)."""
    found: dict[int, str] = {}
    for tracer in tracers:
        for prog_id, hook in tracer.ready.get("programs", {}).items():
            found[int(prog_id)] = hook
    return found


def run_overhead(repeats: int, duration_s: float, log_dir: Path, log=print,
                 configs: tuple[str, ...] = CONFIGS, workloads: tuple[str, ...] = WORKLOADS) -> OverheadResults:
    results = OverheadResults()
    try:
        _run_rounds(results, repeats, duration_s, log_dir, log, configs, workloads)
    except KeyboardInterrupt:
        # The with and finally blocks have taken the lab, CPU groups and tracers down by
        # now; what was measured stays, so a long run stopped early still reports.
        results.interrupted = True
        begun = len({run.round for run in results.runs})
        results.notes.append(f"interrupted: {len(results.runs)} runs measured, in {begun} of {repeats} rounds "
                             "begun (paired figures use only rounds that measured both configurations)")
    return results


def _run_rounds(results: OverheadResults, repeats: int, duration_s: float, log_dir: Path, log,
                configs: tuple[str, ...], workloads: tuple[str, ...]) -> None:
    with Lab.up(["server", "client"]) as lab:
        work = Workloads(lab, server_cpu=1, client_cpu=0)
        for round_index in range(repeats):
            # Rotate the order so no configuration always runs first (or last) in a round.
            order = list(configs[round_index % len(configs):]) + list(configs[:round_index % len(configs)])
            for config in order:
                tracers = tracers_for(config)
                with CpuGroup(f"tracer-{config}") as group:
                    try:
                        for tracer in tracers:
                            tracer.start(group, log_dir)
                        _check_hooks(config, tracers, results)
                        prog_hooks = hooks_by_prog_id(tracers)
                        for workload in workloads:
                            before_cpu = group.usage_ns()
                            before_progs = _programs(tracers)
                            result = work.run(workload, duration_s)
                            after_progs = _programs(tracers)
                            memory = [memory_bytes(t.pid) for t in tracers]  # one read of each status
                            run = Run(config, round_index, workload, result, group.usage_ns() - before_cpu,
                                      sum(rss for rss, _ in memory), sum(anon for _, anon in memory))
                            run.events, run.run_time_ns = _program_deltas(before_progs, after_progs, prog_hooks)
                            results.runs.append(run)
                            log(f"  round {round_index + 1}/{repeats} {config:<16} {workload:<4} "
                                f"{result.rate:10.2f} {'Gbit/s' if workload == 'bulk' else 'tx/s  '} "
                                f"cpu/unit {result.cpu_per_unit:8.3f} tracer cpu {run.tracer_cpu_ns / 1e6:7.1f} ms "
                                f"others {run.others_cpu_percent:4.0f}%")
                    finally:
                        for tracer in tracers:
                            summary = tracer.stop()
                            if summary:
                                results.tracer_summaries.setdefault(tracer.name, []).append(summary)


def _programs(tracers: list[TracerProcess]) -> dict:
    programs = {}
    for tracer in tracers:
        programs.update(bpf_programs_of(tracer.pid))
    return programs


def _program_deltas(before: dict, after: dict, hooks: dict[int, str]) -> tuple[dict[str, int], dict[str, int]]:
    events: dict[str, int] = {}
    run_time: dict[str, int] = {}
    for prog_id, now in after.items():
        hook = hooks.get(prog_id, f"prog:{prog_id}")
        then = before.get(prog_id)
        events[hook] = events.get(hook, 0) + now.run_count - (then.run_count if then else 0)
        run_time[hook] = run_time.get(hook, 0) + now.run_time_ns - (then.run_time_ns if then else 0)
    return events, run_time


def _check_hooks(config: str, tracers: list[TracerProcess], results: OverheadResults) -> None:
    if not config.startswith("netprof"):
        return
    hooks = set(tracers[0].ready.get("hooks", []))
    # Events, not methods: netprof is on some of them through raw tracepoints, and is
    # compared with both floors.
    if {hook_event(h) for h in hooks} != {hook_event(h) for h in FLOOR_HOOKS}:
        note = (f"netprof attaches to {sorted(hooks)} but the floor to {sorted(FLOOR_HOOKS)}: "
                "update bench/bpf/floor.bpf.c and FLOOR_HOOKS")
        if note not in results.notes:
            results.notes.append(note)


# -- summaries ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Spread:
    low: float
    median: float
    high: float

    def format(self, digits: int = 3) -> str:
        return f"{self.median:.{digits}f} ({self.low:.{digits}f}–{self.high:.{digits}f})"


def spread(values: list[float]) -> Spread | None:
    values = [v for v in values if v == v]  # drop NaN
    if not values:
        return None
    return Spread(min(values), statistics.median(values), max(values))


@dataclass(frozen=True)
class MedianInterval:
    """An interval that holds the median of the distribution the values were drawn from with
    at least `confidence`, whatever that distribution is (order statistics: the number of
    values below the true median is Binomial(n, 1/2))."""
    low: float
    high: float
    confidence: float


def median_interval(values: list[float], confidence: float = 0.90) -> MedianInterval | None:
    """The narrowest symmetric order-statistic interval [x(k), x(n+1-k)] whose coverage is
    at least `confidence`; None when even [min, max] covers less (too few rounds: 5 rounds
    give 93.75%, 4 only 87.5%).

    Why this and not mean ± t·s: a round that a neighbour disturbed is an outlier, not noise
    with a normal tail, and the same-round ratios of a shared machine are skewed by such
    rounds. Why the median of ratios: each ratio already cancels what the round's machine
    speed did to both configurations."""
    ordered = sorted(v for v in values if v == v)
    n = len(ordered)
    if n == 0:
        return None
    best: MedianInterval | None = None
    tail = 0.0   # P(Binomial(n, 1/2) <= k - 1), grown one term per k
    for k in range(1, n // 2 + 1):
        # P(x(k) <= median <= x(n+1-k)) = 1 - 2 * P(Binomial(n, 1/2) <= k - 1)
        tail += math.comb(n, k - 1) / 2 ** n
        coverage = 1 - 2 * tail
        if coverage < confidence:
            break
        best = MedianInterval(ordered[k - 1], ordered[n - k], coverage)
    return best


def sign_test_p(values: list[float], below: float = 1.0) -> float | None:
    """One-sided sign test: the chance of seeing this many values below `below` or more if
    each value were as likely above as below (ties are dropped, as the test does)."""
    values = [v for v in values if v == v and v != below]
    n = len(values)
    if n == 0:
        return None
    under = sum(v < below for v in values)
    return sum(math.comb(n, i) for i in range(under, n + 1)) / 2 ** n


def best_ratio(runs: list[Run], config: str, workload: str) -> float | None:
    """Lowest CPU per unit of work of a configuration over the lowest of no tracing: noise
    on a shared machine only ever adds CPU, so the best run of each is the least disturbed."""
    def best(name: str) -> float | None:
        values = [r.result.cpu_per_unit for r in runs if r.config == name and r.workload == workload]
        values = [v for v in values if v == v]
        return min(values) if values else None

    base, value = best("none"), best(config)
    return None if base is None or value is None or base <= 0 else value / base


def paired_ratios(runs: list[Run], config: str, workload: str, metric, base_config: str = "none") -> list[float]:
    """metric(config)/metric(base_config) per round: the two ran minutes apart at most."""
    by_round = {(r.config, r.round): r for r in runs if r.workload == workload}
    ratios = []
    for (name, round_index), run in by_round.items():
        base = by_round.get((base_config, round_index))
        if name == config and base is not None:
            denominator = metric(base)
            if denominator:
                ratios.append(metric(run) / denominator)
    return ratios
