"""The tables `make bench` prints (Markdown, so bench/README.md can hold the latest)."""
from __future__ import annotations

import statistics

from .overhead import MedianInterval, OverheadResults, Run, best_ratio, median_interval, paired_ratios, sign_test_p, spread
from .workloads import UNITS

CONFIG_LABELS = {
    "none": "no tracing",
    "floor": "floor: empty programs on netprof's hooks",
    "floor-raw": "floor-raw: the same through raw tracepoints",
    "netprof": "netprof, all probes, as shipped (programs timed 1 s in 10)",
    "netprof-stats": "netprof, BPF statistics on all the time",
    "netprof-nostats": "netprof, cost measurement off",
    "netprof-quiet": "netprof, quiet tier pinned (--tier quiet)",
    "netprof-auto": "netprof, --tier auto (serve's default)",
    "bcc-tools": "BCC: softirqs-bpfcc + tcpretrans/tcpdrop ports",
}
# Published numbers the measurements are read against.
ANCHORS = (
    ("empty BPF program on a tracepoint", "≈12.6 ns/event",
     "kernel selftests `bench trig-tp` (tools/testing/selftests/bpf/benchs), as quoted in the issue"),
    ("BPF ring buffer, small records", "≈11 M records/s", "kernel selftests `bench rb-libbpf`, as quoted in the issue"),
    ("BPF perf buffer, small records", "≈0.9 M records/s", "kernel selftests `bench pb-libbpf`, as quoted in the issue"),
)


def _median(values: list[float]) -> float | None:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else None


def _fmt(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _interval(interval: MedianInterval | None) -> str:
    if interval is None:
        return "– (too few rounds)"
    return f"{interval.low:.3f}–{interval.high:.3f} ({100 * interval.confidence:.1f}%)"


def _runs(results: OverheadResults, config: str, workload: str) -> list[Run]:
    return [r for r in results.runs if r.config == config and r.workload == workload]


def events_per_unit(results: OverheadResults, workload: str) -> dict[str, float]:
    """Program runs per unit of work, per hook, from the runs of netprof with statistics
    on all the time (run_cnt only moves while they are on)."""
    per_hook: dict[str, list[float]] = {}
    for run in _runs(results, "netprof-stats", workload):
        if run.result.units <= 0:
            continue
        for hook, count in run.events.items():
            per_hook.setdefault(hook, []).append(count / run.result.units)
    return {hook: statistics.median(values) for hook, values in per_hook.items()}


def overhead_table(results: OverheadResults, configs: list[str], workloads: list[str], duration_s: float) -> str:
    lines = []
    for workload in workloads:
        unit, rate_unit, _, cpu_unit = UNITS[workload]
        lines.append(f"\n**{workload}** — CPU per unit of work is the measure; throughput is shown, not judged. "
                     "Median (min–max) over rounds; 'best' = lowest CPU/work of the configuration ÷ lowest of "
                     "no tracing; 'paired' = ratio to no tracing in the same round\n")
        lines.append(f"| configuration | {rate_unit} | {cpu_unit} | CPU/work × no tracing: best | paired "
                     "| throughput × no tracing | tracer process CPU % | tracer RSS MiB (anonymous) | others' load % |")
        lines.append("|---|---|---|---|---|---|---|---|---|")
        for config in configs:
            runs = _runs(results, config, workload)
            if not runs:
                continue
            rate = spread([r.result.rate for r in runs])
            cpu = spread([r.result.cpu_per_unit for r in runs])
            cpu_ratio = spread(paired_ratios(results.runs, config, workload, lambda r: r.result.cpu_per_unit))
            rate_ratio = spread(paired_ratios(results.runs, config, workload, lambda r: r.result.rate))
            tracer_cpu = _median([100 * r.tracer_cpu_ns / (r.result.seconds * 1e9) for r in runs if r.result.seconds])
            rss = _median([r.tracer_rss_bytes / 2**20 for r in runs])
            anon = _median([r.tracer_anon_rss_bytes / 2**20 for r in runs])
            others = _median([r.others_cpu_percent for r in runs])
            best = best_ratio(results.runs, config, workload)
            digits = 3 if workload in ("bulk", "retrans") else 2
            lines.append(
                f"| {CONFIG_LABELS.get(config, config)} | {rate.format(1 if workload != 'bulk' else 2) if rate else '–'} "
                f"| {cpu.format(digits) if cpu else '–'} "
                f"| {'1' if config == 'none' else _fmt(best, 3)} "
                f"| {'1' if config == 'none' else (cpu_ratio.format(3) if cpu_ratio else '–')} "
                f"| {'1' if config == 'none' else (rate_ratio.format(3) if rate_ratio else '–')} "
                f"| {_fmt(tracer_cpu) if config != 'none' else '–'} "
                f"| {f'{_fmt(rss, 0)} ({_fmt(anon, 0)})' if config != 'none' else '–'} "
                f"| {_fmt(others, 0)} |")
    return "\n".join(lines)


def goal_table(results: OverheadResults, workloads: list[str]) -> tuple[str, dict]:
    """The 1.25×-of-floor goal: netprof's added CPU per unit of work over the floor's (best
    of rounds, see best_ratio), and the same per event (added CPU ÷ program runs, the runs
    counted by netprof-stats)."""
    lines = ["| workload | floor: added CPU/work | netprof: added | netprof ÷ floor | netprof, stats always on: added "
             "| BCC tools: added | floor: added ns/event | netprof: added ns/event | events/unit |",
             "|---|---|---|---|---|---|---|---|---|"]
    verdicts = {}
    for workload in workloads:
        def added(config: str) -> float | None:
            ratio = best_ratio(results.runs, config, workload)
            return None if ratio is None else ratio - 1

        floor, netprof, always, bcc = added("floor"), added("netprof"), added("netprof-stats"), added("bcc-tools")
        events = sum(events_per_unit(results, workload).values())
        base = _median([r.result.cpu_per_unit for r in _runs(results, "none", workload)])
        scale = UNITS[workload][2]

        def per_event(fraction: float | None) -> float | None:
            if fraction is None or not base or not events:
                return None
            return fraction * base * scale / events

        def pct(value: float | None) -> str:
            return "–" if value is None else f"{100 * value:+.1f}%"

        def over(a: float | None, b: float | None) -> str:
            if a is None or b is None:
                return "–"
            if b <= 0.005:
                return "floor within noise"
            return f"{a / b:.2f}×"

        verdicts[workload] = {"floor": floor, "netprof": netprof, "netprof-stats": always, "bcc-tools": bcc}
        lines.append(f"| {workload} | {pct(floor)} | {pct(netprof)} | {over(netprof, floor)} | {pct(always)} "
                     f"| {pct(bcc)} | {_fmt(per_event(floor), 1)} | {_fmt(per_event(netprof), 1)} | {_fmt(events, 2)} |")
    return "\n".join(lines), verdicts


def against_table(results: OverheadResults, workloads: list[str]) -> str:
    """Issue 16's goal 1 as the run saw it: netprof's added CPU per unit of work beside BCC's
    tools' and the floors', on both bases, and netprof against BCC's tools directly: their
    CPU per unit of work divided within each round (the two ran minutes apart), which leaves
    out the no-tracing runs' own spread that both ratios to no tracing carry.

    "Below BCC's tools" is shown when the median's interval lies below 1: then the ratio a
    round most often gives is below 1 with the interval's confidence, whatever shape this
    machine's noise has. A median below 1 with an interval across 1 is not shown either way."""
    lines = ["| workload | netprof: added, best / paired | BCC tools: added, best / paired "
             "| netprof ÷ BCC tools, same round: median (min–max) | rounds netprof cheaper "
             "| the median's interval (≥ 90%) | sign test, one-sided p "
             "| floor: added, best / paired | floor-raw: added, best / paired |",
             "|---|---|---|---|---|---|---|---|---|"]

    def cpu(run: Run) -> float:
        return run.result.cpu_per_unit

    def added(config: str, workload: str) -> str:
        best = best_ratio(results.runs, config, workload)
        paired = _median(paired_ratios(results.runs, config, workload, cpu))
        if best is None and paired is None:
            return "–"
        return " / ".join("–" if v is None else f"{100 * (v - 1):+.1f}%" for v in (best, paired))

    for workload in workloads:
        versus = paired_ratios(results.runs, "netprof", workload, cpu, base_config="bcc-tools")
        between = spread(versus)
        cheaper = f"{sum(v < 1 for v in versus)} of {len(versus)}" if versus else "–"
        interval = median_interval(versus)
        p_value = sign_test_p(versus)
        lines.append(f"| {workload} | {added('netprof', workload)} | {added('bcc-tools', workload)} "
                     f"| {between.format(3) if between else '–'} | {cheaper} "
                     f"| {_interval(interval)} | {'–' if p_value is None else f'{p_value:.3f}'} "
                     f"| {added('floor', workload)} | {added('floor-raw', workload)} |")
    return "\n".join(lines)


def hooks_table(results: OverheadResults, workloads: list[str]) -> str:
    """Per hook and workload, from netprof's own statistics (netprof-stats runs): events per
    unit of work and the time inside the program per event. Program time excludes the
    tracepoint's dispatch (the floor) but includes the statistics' own clock read, which an
    empty program shows (the micro section measures it)."""
    lines = ["| hook | " + " | ".join(f"{w}: events/unit | {w}: ns/event" for w in workloads) + " |",
             "|---|" + "---|---|" * len(workloads)]
    per_workload = {w: events_per_unit(results, w) for w in workloads}
    hooks = sorted({h for values in per_workload.values() for h in values})
    for hook in hooks:
        cells = []
        for workload in workloads:
            ns = [r.run_time_ns[hook] / r.events[hook] for r in _runs(results, "netprof-stats", workload)
                  if r.events.get(hook)]
            cells += [_fmt(per_workload[workload].get(hook), 2), _fmt(_median(ns), 0)]
        lines.append(f"| {hook} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def anchors_table() -> str:
    lines = ["| anchor | published | source |", "|---|---|---|"]
    lines += [f"| {name} | {value} | {source} |" for name, value, source in ANCHORS]
    return "\n".join(lines)


def contamination_notes(results: OverheadResults) -> list[str]:
    """Runs of stats-off configurations during which some other process had BPF statistics
    on (other test runs on this machine): their programs' run counts moved."""
    tainted = [r for r in results.runs if r.config in ("floor", "netprof-nostats") and any(r.events.values())]
    if not tainted:
        return []
    return [f"{len(tainted)} stats-off run(s) ({', '.join(sorted({f'{r.config}/{r.workload}' for r in tainted}))}) "
            "had BPF statistics switched on by another process part of the time (its run counts moved): "
            "those runs paid the statistics' clock reads too."]
