"""`fix --apply --verify`'s judgement: a finding's own figure, before and after, beyond noise."""
import copy

import pytest

from profiler.fix.verify import confirm, judge, packets_processed, target_figure


def capture(duration_s: float = 10.0, backlog_drops: int = 0, processed: int = 1_000_000,
            net_rx_ns: int = 0, rcvbuf: int = 0) -> dict:
    return {
        "duration_s": duration_s,
        "pods": [{"pod": "rx", "netns": 1, "retransmits": 0,
                  "drops": {"CPU_BACKLOG": backlog_drops, "SOCKET_RCVBUFF": rcvbuf}, "netstat": {}}],
        "cpus": [{"cpu": 0, "softnet": {"processed": processed},
                  "softirq": {"NET_RX": {"count": 100, "time_ns": net_rx_ns}}},
                 {"cpu": 1, "softnet": {"processed": 0}, "softirq": {}}],
    }


BACKLOG = {"kind": "cpu-backlog-drops", "pod": "rx", "cpu": 0}


def test_a_fix_that_removes_the_drops_is_kept():
    verdict = judge(BACKLOG, capture(backlog_drops=23_100), capture(backlog_drops=0))
    assert verdict.outcome == "kept"
    assert verdict.before_per_s == pytest.approx(2310) and verdict.after_per_s == 0
    assert verdict.headline().startswith("kept: CPU_BACKLOG drops 2,310.0/s → 0.0/s")


def test_no_change_beyond_noise_is_rolled_back():
    verdict = judge(BACKLOG, capture(backlog_drops=23_100), capture(backlog_drops=22_800))
    assert verdict.outcome == "rolled-back" and verdict.why == "no change beyond noise"


def test_worse_is_rolled_back():
    verdict = judge(BACKLOG, capture(backlog_drops=1000), capture(backlog_drops=5000))
    assert verdict.outcome == "rolled-back" and verdict.why == "it got worse"


def test_traffic_that_stopped_makes_it_inconclusive():
    # The drops vanished, but so did the traffic: that proves nothing about the fix.
    verdict = judge(BACKLOG, capture(backlog_drops=23_100), capture(backlog_drops=0, processed=1000))
    assert verdict.outcome == "inconclusive"
    assert "traffic fell" in verdict.why


def test_more_traffic_does_not_spoil_a_real_improvement():
    verdict = judge(BACKLOG, capture(backlog_drops=23_100), capture(backlog_drops=0, processed=3_000_000))
    assert verdict.outcome == "kept"


def test_rates_not_counts_are_compared():
    # Same 2,310 drops/s over a capture twice as long: no change.
    verdict = judge(BACKLOG, capture(backlog_drops=23_100), capture(duration_s=20.0, backlog_drops=46_200,
                                                                   processed=2_000_000))
    assert verdict.outcome == "rolled-back" and verdict.why == "no change beyond noise"


def test_softirq_imbalance_is_judged_on_the_busy_cpus_time():
    finding = {"kind": "softirq-imbalance", "pod": None, "cpu": 0}
    assert target_figure(finding) == ("cpu", "cpu0", "NET_RX time")
    kept = judge(finding, capture(net_rx_ns=8 * 10**9), capture(net_rx_ns=3 * 10**9))
    assert kept.outcome == "kept" and "% cpu" in kept.headline()
    same = judge(finding, capture(net_rx_ns=8 * 10**9), capture(net_rx_ns=int(7.8 * 10**9)))
    assert same.outcome == "rolled-back"


def test_a_kind_without_a_figure_is_never_kept():
    verdict = judge({"kind": "something-new", "pod": None, "cpu": None}, capture(), capture())
    assert verdict.outcome == "rolled-back"


def test_packets_processed_falls_back_to_net_rx_runs():
    doc = capture(processed=0)
    assert packets_processed(doc) == 100
    assert packets_processed(copy.deepcopy(capture())) == 1_000_000


# ---------------------------------------------------------------- the A-B-A: undone, it comes back

def test_a_kept_fix_is_confirmed_when_its_figure_comes_back_undone():
    after = capture(backlog_drops=0)
    tentative = judge(BACKLOG, capture(backlog_drops=23_100), after)
    verdict = confirm(tentative, BACKLOG, after, capture(backlog_drops=22_900))
    assert verdict.outcome == "kept" and verdict.why.endswith("back when undone")
    assert verdict.undone_per_s == pytest.approx(2290)
    assert verdict.headline().startswith("kept: CPU_BACKLOG drops 2,310.0/s → 0.0/s, 2,290.0/s undone")
    assert verdict.to_json()["undone_per_s"] == pytest.approx(2290)


def test_a_fall_that_stays_when_undone_was_not_the_fixs():
    # The CI run that made this rule: 714/s → 261/s with a fix aimed elsewhere, a drift.
    after = capture(backlog_drops=2610)
    tentative = judge(BACKLOG, capture(backlog_drops=7145), after)
    assert tentative.outcome == "kept"          # the before/after pair alone is fooled
    verdict = confirm(tentative, BACKLOG, after, capture(backlog_drops=2500))
    assert verdict.outcome == "rolled-back" and "did not come back" in verdict.why


def test_a_fall_that_deepens_when_undone_is_not_confirmed():
    after = capture(backlog_drops=2610)
    tentative = judge(BACKLOG, capture(backlog_drops=7145), after)
    verdict = confirm(tentative, BACKLOG, after, capture(backlog_drops=100))
    assert verdict.outcome == "rolled-back"


def test_traffic_that_falls_while_undone_makes_it_inconclusive():
    after = capture(backlog_drops=0)
    tentative = judge(BACKLOG, capture(backlog_drops=23_100), after)
    verdict = confirm(tentative, BACKLOG, after, capture(backlog_drops=0, processed=1000))
    assert verdict.outcome == "inconclusive" and "while the fix was undone" in verdict.why


# ------------------------------------------- softirq imbalance: spread, not moved to another CPU

def cpus_capture(net_rx_ns_by_cpu: dict[int, int], duration_s: float = 10.0) -> dict:
    return {"duration_s": duration_s, "pods": [],
            "cpus": [{"cpu": cpu, "softnet": {"processed": 250_000},
                      "softirq": {"NET_RX": {"count": 1000, "time_ns": ns}}} for cpu, ns in net_rx_ns_by_cpu.items()]}


IMBALANCE = {"kind": "softirq-imbalance", "pod": None, "cpu": 0}


def test_a_pile_moved_whole_to_another_cpu_is_rolled_back():
    # The mq guest: the one busy queue's IRQ moved from CPU 0 to CPU 1. CPU 0's NET_RX time
    # fell from 15% to 0.5% (and would come back when undone), but CPU 1 took the same 15%.
    piled = cpus_capture({0: 15 * 10**8, 1: 2 * 10**7, 2: 10**7, 3: 10**7})
    moved = cpus_capture({0: 5 * 10**7, 1: 15 * 10**8, 2: 10**7, 3: 10**7})
    verdict = judge(IMBALANCE, piled, moved)
    assert verdict.outcome == "rolled-back"
    assert "moved to cpu1" in verdict.why and "not spread" in verdict.why
    # The finding's own figure is still the one reported: CPU 0's, which did fall.
    assert verdict.before_per_s == pytest.approx(1.5e8) and verdict.after_per_s == pytest.approx(5e6)


def test_a_spread_that_lowers_the_busiest_cpu_is_kept():
    piled = cpus_capture({0: 15 * 10**8, 1: 2 * 10**7, 2: 10**7, 3: 10**7})
    spread = cpus_capture({0: 4 * 10**8, 1: 45 * 10**7, 2: 35 * 10**7, 3: 4 * 10**8})
    verdict = judge(IMBALANCE, piled, spread)
    assert verdict.outcome == "kept", verdict.why


def test_a_figure_absent_from_both_windows_is_zero_not_a_crash():
    # A 6.1 guest: the drops were gone with the fix (the figure absent from the capture) and
    # stayed gone when it was undone -- `fix --verify` died on an assertion (exit 70).
    empty = capture()
    for pod in empty["pods"]:
        pod["drops"] = {}
    tentative = judge(BACKLOG, capture(backlog_drops=23_100), empty)
    assert tentative.outcome == "kept" and tentative.after_per_s == 0
    verdict = confirm(tentative, BACKLOG, empty, copy.deepcopy(empty))
    assert verdict.outcome == "rolled-back" and verdict.undone_per_s == 0
    # and a --from capture that never had the figure: nothing to keep
    assert judge(BACKLOG, empty, copy.deepcopy(empty)).outcome == "rolled-back"
