"""The benchmark's comparison of netprof with BCC's tools (bench/table.py against_table):
what it divides, within which round, and what it counts as cheaper. Synthetic runs: the
arithmetic, not the machine."""
from __future__ import annotations

from bench.overhead import OverheadResults, Run, median_interval, paired_ratios, sign_test_p
from bench.table import against_table
from bench.workloads import WorkResult


def _run(config: str, round_index: int, cpu_s_per_gb: float) -> Run:
    # 1 GB moved: cpu_per_unit is the CPU seconds of the run.
    result = WorkResult("bulk", units=1.0, seconds=1.0, cpu_ns=int(cpu_s_per_gb * 1e9))
    return Run(config, round_index, "bulk", result)


def _results(table: dict[str, list[float]]) -> OverheadResults:
    return OverheadResults(runs=[_run(config, i, value) for config, values in table.items()
                                 for i, value in enumerate(values)])


def test_netprof_against_bcc_is_divided_within_each_round():
    # Round 1 is slow for everyone (a noisy neighbour): netprof beats BCC in both rounds,
    # although its slow round costs more than BCC's quiet one.
    results = _results({"none": [1.0, 2.0], "netprof": [1.02, 2.1], "bcc-tools": [1.04, 2.2]})
    ratios = paired_ratios(results.runs, "netprof", "bulk", lambda r: r.result.cpu_per_unit,
                           base_config="bcc-tools")
    assert sorted(round(r, 4) for r in ratios) == sorted([round(1.02 / 1.04, 4), round(2.1 / 2.2, 4)])
    row = against_table(results, ["bulk"]).splitlines()[2]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[0] == "bulk"
    assert cells[1] == "+2.0% / +3.5%"      # best: 1.02 ÷ 1.0; paired: median of 1.02 and 1.05
    assert cells[2] == "+4.0% / +7.0%"
    assert cells[4] == "2 of 2"
    assert cells[5] == "– (too few rounds)"     # [min, max] of 2 rounds covers the median 50%
    assert cells[6] == "0.250"                  # both below 1: (1/2)^2
    assert cells[7] == "–" and cells[8] == "–"  # no floor configured in this run


def test_a_round_without_bcc_is_left_out_and_a_dearer_round_is_not_cheaper():
    results = _results({"none": [1.0, 1.0, 1.0], "netprof": [1.10, 1.05, 1.2], "bcc-tools": [1.05, 1.06]})
    row = against_table(results, ["bulk"]).splitlines()[2]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[4] == "1 of 2"


def test_the_medians_interval_is_the_order_statistics_the_binomial_allows():
    # 9 rounds: [x(2), x(8)] covers 1 - 2 * (1 + 9) / 512 = 96.1%; [x(3), x(7)] only
    # 1 - 2 * 46 / 512 = 82.0%, below 90%.
    values = [0.90, 0.80, 1.10, 0.95, 0.97, 0.85, 0.93, 0.99, 0.91]
    interval = median_interval(values)
    assert (interval.low, interval.high) == (0.85, 0.99)
    assert abs(interval.confidence - (1 - 20 / 512)) < 1e-12
    # At a lower confidence the interval narrows to [x(3), x(7)].
    narrower = median_interval(values, confidence=0.80)
    assert (narrower.low, narrower.high) == (0.90, 0.97)
    # 4 rounds cannot reach 90% (min–max covers 87.5%); 5 can (93.75%), only as min–max.
    assert median_interval([0.9, 0.8, 0.95, 0.85]) is None
    five = median_interval([0.9, 1.2, 0.8, 0.95, 0.85])
    assert (five.low, five.high, five.confidence) == (0.8, 1.2, 0.9375)


def test_the_sign_test_counts_rounds_below_one_and_drops_ties():
    assert sign_test_p([0.9] * 5) == 1 / 32
    assert sign_test_p([1.1] * 5) == 1.0
    # 7 of 9 below: P(X >= 7) = (36 + 9 + 1) / 512; a tie at exactly 1 is not a round.
    assert sign_test_p([0.9] * 7 + [1.1] * 2 + [1.0]) == 46 / 512
    assert sign_test_p([]) is None


def test_an_interrupted_overhead_run_keeps_what_it_measured(monkeypatch, tmp_path):
    # Ctrl-C (or SIGTERM, which the bench turns into one) in round 2 of 5: the runs of round 1
    # and the half of round 2 are kept and reported, and the run says it was cut short.
    import bench.overhead as overhead

    def rounds(results, repeats, duration_s, log_dir, log, configs, workloads):
        results.runs += [_run("none", 0, 1.0), _run("netprof", 0, 1.02), _run("bcc-tools", 0, 1.05),
                         _run("none", 1, 1.1)]
        raise KeyboardInterrupt

    monkeypatch.setattr(overhead, "_run_rounds", rounds)
    results = overhead.run_overhead(5, 3.0, tmp_path, log=lambda _: None)
    assert results.interrupted
    assert [(r.config, r.round) for r in results.runs] == [("none", 0), ("netprof", 0), ("bcc-tools", 0), ("none", 1)]
    assert results.notes == ["interrupted: 4 runs measured, in 2 of 5 rounds begun (paired figures use only "
                             "rounds that measured both configurations)"]
    assert paired_ratios(results.runs, "netprof", "bulk", lambda r: r.result.cpu_per_unit) == [1.02]
