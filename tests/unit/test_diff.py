"""`netprof diff`: rates, the noise test, findings, the CLI's exit status."""
import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from profiler.analysis.diff import (ALPHA, EXACT_TEST_MAX_EVENTS, capture_figures, diff_captures,
                                    rate_change_p_value)

BUSY = Path(__file__).parents[1] / "tui" / "fixtures" / "busy.json"


def brute_force_p(k: int, n: int, p0: float) -> float:
    """Two-sided exact binomial p-value by enumeration, as scipy.stats.binomtest defines it."""
    pmf = [math.comb(n, i) * p0 ** i * (1 - p0) ** (n - i) for i in range(n + 1)]
    return min(1.0, sum(x for x in pmf if x <= pmf[k] * (1 + 1e-7)))


@pytest.mark.parametrize("before,before_s,after,after_s", [
    (3, 1.0, 7, 1.0), (0, 1.0, 5, 1.0), (10, 2.0, 5, 1.0), (12, 1.0, 30, 3.0), (40, 5.0, 90, 6.0), (0, 1.0, 0, 2.0)])
def test_exact_test_matches_enumeration(before, before_s, after, after_s):
    n = before + after
    p, test = rate_change_p_value(before, before_s, after, after_s)
    assert test == "poisson-exact-conditional"
    expected = brute_force_p(before, n, before_s / (before_s + after_s)) if n else 1.0
    assert p == pytest.approx(expected, rel=1e-9, abs=1e-15)


def test_known_value_and_equal_rates_over_different_spans():
    # binomtest(3, 10, 0.5): 0.34375, the textbook value.
    assert rate_change_p_value(3, 1.0, 7, 1.0)[0] == pytest.approx(0.34375)
    # Same rate (10/s) seen over 5 s and 10 s: nothing to reject.
    assert rate_change_p_value(50, 5.0, 100, 10.0)[0] == pytest.approx(1.0)


def test_normal_approximation_past_the_exact_limit_agrees_with_the_exact_test():
    half = EXACT_TEST_MAX_EVENTS // 2
    exact, _ = rate_change_p_value(half - 200, 1.0, half + 200, 1.0)
    approx, test = rate_change_p_value(half - 200, 1.0, half + 201, 1.0)
    assert test == "poisson-normal-approx"
    assert approx == pytest.approx(exact, rel=0.05)


def load_busy() -> dict:
    return json.loads(BUSY.read_text())


def test_a_capture_against_itself_has_no_change():
    doc = load_busy()
    diff = diff_captures(doc, copy.deepcopy(doc))
    assert not diff.changed and not diff.worse
    assert diff.unchanged == len(capture_figures(doc)) > 50


def test_the_same_rates_over_a_longer_capture_are_no_change():
    before = load_busy()
    after = copy.deepcopy(before)
    after["duration_s"] = before["duration_s"] * 3
    for pod in after["pods"]:
        pod["drops"] = {reason: count * 3 for reason, count in pod["drops"].items()}
        pod["retransmits"] *= 3
        pod["retransmitted_segments"] = pod.get("retransmitted_segments", 0) * 3
        pod["conntrack"] = {stat: value * 3 for stat, value in pod["conntrack"].items()}
        pod["netstat"] = {stat: value * 3 for stat, value in pod["netstat"].items()}
    pod_changes = [c for c in diff_captures(before, after).changes if c.group in ("pod", "reason")]
    assert pod_changes == []


def test_a_new_fault_is_reported_first_and_as_worse():
    before = load_busy()
    after = copy.deepcopy(before)
    quiet = next(p for p in after["pods"] if not p["retransmits"] and not p["drops"].get("SOCKET_RCVBUFF"))
    quiet["drops"]["SOCKET_RCVBUFF"] = 991
    diff = diff_captures(before, after)
    assert diff.worse
    first = diff.changes[0]
    assert (first.group, first.subject, first.metric, first.direction) == ("pod", quiet["pod"], "drops SOCKET_RCVBUFF", "worse")
    assert first.p_value < ALPHA and first.before_per_s == 0


def test_a_small_wobble_on_a_big_count_is_noise():
    # 3 % more of a count in the hundreds of thousands: the test alone would reject it,
    # the ×1.5 floor keeps it within noise.
    before = load_busy()
    after = copy.deepcopy(before)
    for pod in after["pods"]:
        pod["drops"] = {reason: int(count * 1.03) for reason, count in pod["drops"].items()}
    assert not [c for c in diff_captures(before, after).changes if c.metric.startswith("drops")]


def test_findings_appear_resolve_and_worsen():
    before = load_busy()
    after = copy.deepcopy(before)
    gone = after["findings"].pop(0)
    after["findings"].append({"kind": "socket-rcvbuf-drops", "severity": "critical", "pod": "x", "cpu": None,
                              "summary": "x drops", "evidence": {}, "fixes": [], "score": 5.0})
    changes = {(f.change, f.kind) for f in diff_captures(before, after).findings}
    assert ("resolved", gone["kind"]) in changes
    assert ("appeared", "socket-rcvbuf-drops") in changes
    assert diff_captures(before, after).findings[0].change == "appeared"


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "profiler.cli", "diff", *args], capture_output=True, text=True,
                          timeout=60)


def test_cli_json_and_exit_status(tmp_path):
    before = load_busy()
    after = copy.deepcopy(before)
    after["pods"][0]["drops"]["SOCKET_RCVBUFF"] = 5000
    (tmp_path / "a.json").write_text(json.dumps(before))
    (tmp_path / "b.json").write_text(json.dumps(after))
    same = run_cli(str(tmp_path / "a.json"), str(tmp_path / "a.json"), "--fail-on", "worse")
    assert same.returncode == 0 and "No change beyond noise" in same.stdout
    worse = run_cli(str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--fail-on", "worse", "--json")
    assert worse.returncode == 1, worse.stderr
    doc = json.loads(worse.stdout)
    assert doc["schema"] == "netprof.diff/v1" and doc["worse"] is True
    assert doc["changes"][0]["metric"] == "drops SOCKET_RCVBUFF" and doc["changes"][0]["test"].startswith("poisson")
    better = run_cli(str(tmp_path / "b.json"), str(tmp_path / "a.json"), "--fail-on", "worse")
    assert better.returncode == 0 and "better" in better.stdout
    assert run_cli(str(tmp_path / "b.json"), str(tmp_path / "a.json"), "--fail-on", "change").returncode == 1


def test_cli_bad_input_is_one_line(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    result = run_cli(str(tmp_path / "bad.json"), str(BUSY))
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("netprof:")


def _changes(before: dict, after: dict, group: str) -> dict:
    return {(c.subject, c.metric): c for c in diff_captures(before, after).changes if c.group == group}


def test_softirq_time_is_judged_on_a_cpu_share_threshold_not_a_count_test():
    before = load_busy()
    duration = before["duration_s"]
    per_s = before["cpus"][0]["softirq"]["NET_RX"]["time_ns"] / duration   # ≈ 80 % of cpu0
    # ×0.6: 32 points of a CPU less, beyond both the ratio and the 5-point floor.
    fell = copy.deepcopy(before)
    fell["cpus"][0]["softirq"]["NET_RX"]["time_ns"] = int(per_s * 0.6 * duration)
    change = _changes(before, fell, "cpu")[("cpu0", "NET_RX time")]
    assert change.direction == "better" and change.test == "threshold" and change.p_value is None
    # ×1.6 of a tiny time (2 µs/s → 3.2 µs/s): the ratio moved, the CPU share did not.
    tiny = copy.deepcopy(before)
    tiny["cpus"][0]["softirq"]["NET_TX"]["time_ns"] = int(before["cpus"][0]["softirq"]["NET_TX"]["time_ns"] * 1.6)
    assert ("cpu0", "NET_TX time") not in _changes(before, tiny, "cpu")


def test_napi_softnet_site_and_listener_figures_are_compared():
    before = load_busy()
    before["pods"][0]["listen"] = [{"address": "0.0.0.0", "port": 8080, "overflow_drops": 0}]
    after = copy.deepcopy(before)
    after["cpus"][0]["napi"][0]["budget_exhausted"] *= 3
    after["cpus"][0]["softnet"]["time_squeeze"] = 400
    after["drop_sites"][1]["count"] = 0
    after["pods"][0]["listen"][0]["overflow_drops"] = 250
    cpu = _changes(before, after, "cpu")
    assert cpu[("cpu0", "NAPI budget exhausted (no_device)")].direction == "worse"
    assert cpu[("cpu0", "softnet time_squeeze")].direction == "worse"
    site = _changes(before, after, "site")
    assert site[("tcp_v4_rcv+0x91 NO_SOCKET", "drops")].direction == "better"
    listener = _changes(before, after, "listener")
    pod = before["pods"][0]["pod"]
    assert listener[(f"{pod} 0.0.0.0:8080", "overflow drops")].direction == "worse"


def test_a_finding_that_gets_more_severe_or_scores_higher_is_worse():
    before = load_busy()
    after = copy.deepcopy(before)
    imbalance = next(f for f in after["findings"] if f["kind"] == "softirq-imbalance")
    imbalance["score"] = imbalance["score"] * 2
    retrans = next(f for f in after["findings"] if f["kind"] == "tcp-retransmits")
    retrans["severity"] = "warning"
    diff = diff_captures(before, after)
    changes = {f.kind: f.change for f in diff.findings}
    assert changes == {"softirq-imbalance": "worse", "tcp-retransmits": "better"}
    assert diff.worse
