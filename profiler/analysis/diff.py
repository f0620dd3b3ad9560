"""Two captures compared: what changed, per second, and whether it is beyond noise.

A capture's counts are events over its own span, so two captures are compared as rates.
Whether a change in an event count is real is a question about two Poisson rates seen over
different exposures; the test used is the exact conditional one: given n = k_before +
k_after events in all, k_before is Binomial(n, t_before / (t_before + t_after)) when the
rate did not change. Its two-sided p-value is exact up to 100,000 events and from the normal
approximation above (where the two agree to many digits).

Real traffic is burstier than Poisson (overdispersed), so on big counts the test alone calls
a 3 % wobble "significant". A change is therefore *beyond noise* only when both hold: the
test rejects at `ALPHA`, and the rate moved by at least `MIN_RATIO` in either direction.
Time figures (softirq time) are not event counts; they are judged by a threshold on the
share of a CPU instead, and say so (`test: "threshold"`).
"""
from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ..document import CpuView, PodView, ProfileDocument
from .findings import SEVERITY_RANK

ALPHA = 1e-3          # per figure; a diff tests hundreds, so a lenient α would cry wolf
MIN_RATIO = 1.5       # a rate must move by ×1.5 (or ÷1.5) to count, whatever the p-value
MIN_SHARE_DELTA = 0.05  # time figures: 5 points of one CPU, and MIN_RATIO
EXACT_TEST_MAX_EVENTS = 100_000

Test = Literal["poisson-exact-conditional", "poisson-normal-approx", "threshold", "none"]
Direction = Literal["worse", "better", "same"]
FindingChange = Literal["appeared", "resolved", "worse", "better"]

# Conntrack stats that are trouble (the others are activity or levels).
_CONNTRACK_TROUBLE = ("insert_failed", "drop", "early_drop")
_SOFTNET_TROUBLE = ("dropped", "time_squeeze")


def rate_change_p_value(before: int, before_s: float, after: int, after_s: float) -> tuple[float, Test]:
    """Two-sided p-value of "the rate did not change" for two event counts over two spans."""
    n = before + after
    if n == 0:
        return 1.0, "poisson-exact-conditional"
    p0 = before_s / (before_s + after_s)
    if n > EXACT_TEST_MAX_EVENTS:
        sd = math.sqrt(n * p0 * (1.0 - p0))
        z = abs(before - n * p0) / sd if sd > 0 else math.inf
        return math.erfc(z / math.sqrt(2.0)), "poisson-normal-approx"
    # log pmf by its ratio recurrence: pmf(i+1)/pmf(i) = (n-i)/(i+1) · p0/(1-p0).
    i = np.arange(n, dtype=np.float64)
    steps = np.log((n - i) / (i + 1.0)) + math.log(p0) - math.log1p(-p0)
    log_pmf = np.concatenate(([n * math.log1p(-p0)], n * math.log1p(-p0) + np.cumsum(steps)))
    observed = log_pmf[before]
    # As scipy's binomtest: every outcome no more likely than the one observed (with a
    # relative tolerance so that ties from rounding count).
    mask = log_pmf <= observed + 1e-7
    peak = log_pmf.max()
    p = float(np.exp(log_pmf[mask] - peak).sum() * math.exp(peak))
    return min(1.0, p), "poisson-exact-conditional"


@dataclass(frozen=True)
class Figure:
    """One figure of a capture: an event count, or a time in ns."""

    group: str     # pod, cpu, reason, site, listener
    subject: str   # the pod label, "cpu3", the reason, the site, "pod port"
    metric: str    # what is counted, in the operator's words
    value: float
    unit: Literal["events", "ns"] = "events"


def _pod_figures(pod: PodView) -> Iterator[Figure]:
    label = pod.name
    yield Figure("pod", label, "retransmitted segments", pod.retransmitted_segments_or_skbs)
    for reason, count in pod.drops.items():
        yield Figure("pod", label, f"drops {reason}", count)
    yield Figure("pod", label, "receive queue full", pod.rcvqueue_full)
    # The larger of the netns counter and the overflow drops, as every view counts them.
    yield Figure("pod", label, "listen overflows", pod.listen_overflows)
    for stat in _CONNTRACK_TROUBLE:
        if stat in pod.conntrack:
            yield Figure("pod", label, f"conntrack {stat}", pod.conntrack[stat])
    for listener in pod.listeners:
        yield Figure("listener", f"{label} {listener.address}:{listener.port}", "overflow drops",
                     listener.overflow_drops)


def _cpu_figures(cpu: CpuView) -> Iterator[Figure]:
    subject = f"cpu{cpu.cpu}"
    for vector in cpu.softirq:
        yield Figure("cpu", subject, f"{vector} time", cpu.softirq_time_ns(vector), "ns")
    for napi in cpu.napi:
        yield Figure("cpu", subject, f"NAPI budget exhausted {napi.get('device', '')}",
                     napi.get("budget_exhausted", 0))
    for stat in _SOFTNET_TROUBLE:
        if stat in cpu.softnet:
            yield Figure("cpu", subject, f"softnet {stat}", cpu.softnet[stat])
    for reason, count in cpu.drops.items():
        yield Figure("cpu", subject, f"drops {reason}", count)


def capture_figures(doc: Mapping[str, Any] | ProfileDocument) -> dict[tuple[str, str, str], Figure]:
    """Every trouble figure of a capture, keyed by (group, subject, metric)."""
    document = doc if isinstance(doc, ProfileDocument) else ProfileDocument(doc)
    figures: dict[tuple[str, str, str], Figure] = {}

    def add(figure: Figure) -> None:
        key = (figure.group, figure.subject, figure.metric)
        old = figures.get(key)
        figures[key] = figure if old is None else Figure(*key, old.value + figure.value, figure.unit)

    reasons: dict[str, float] = {}
    for pod in document.pods:
        for figure in _pod_figures(pod):
            add(figure)
        for reason, count in pod.drops.items():
            reasons[reason] = reasons.get(reason, 0) + count
    for reason, count in reasons.items():
        add(Figure("reason", reason, "drops", count))
    for cpu in document.cpus:
        for figure in _cpu_figures(cpu):
            add(figure)
    for site in document.drop_sites:
        add(Figure("site", f"{site.get('symbol', '')} {site.get('reason', '')}", "drops", site.get("count", 0)))
    return figures


@dataclass(frozen=True)
class FigureChange:
    group: str
    subject: str
    metric: str
    unit: str
    before_per_s: float
    after_per_s: float
    before_count: float
    after_count: float
    p_value: float | None
    test: Test
    beyond_noise: bool
    direction: Direction

    @property
    def ratio(self) -> float:
        if self.before_per_s == 0:
            return math.inf if self.after_per_s else 1.0
        return self.after_per_s / self.before_per_s

    def to_json(self) -> dict:
        return {"group": self.group, "subject": self.subject, "metric": self.metric, "unit": self.unit,
                "before_per_s": round(self.before_per_s, 6), "after_per_s": round(self.after_per_s, 6),
                "before_count": self.before_count, "after_count": self.after_count,
                "p_value": self.p_value, "test": self.test, "beyond_noise": self.beyond_noise,
                "direction": self.direction}


def _moved_enough(before_per_s: float, after_per_s: float) -> bool:
    low, high = sorted((before_per_s, after_per_s))
    return high > 0 and (low == 0 or high / low >= MIN_RATIO)


def compare_figure(before: Figure | None, after: Figure | None, before_s: float, after_s: float) -> FigureChange:
    known = before or after
    assert known is not None
    k_before = before.value if before else 0
    k_after = after.value if after else 0
    r_before, r_after = k_before / before_s, k_after / after_s
    direction: Direction = "worse" if r_after > r_before else "better" if r_after < r_before else "same"
    if known.unit == "ns":
        share_delta = abs(r_after - r_before) / 1e9
        beyond = share_delta >= MIN_SHARE_DELTA and _moved_enough(r_before, r_after)
        p_value, test = None, "threshold"
    else:
        p_value, test = rate_change_p_value(int(k_before), before_s, int(k_after), after_s)
        beyond = p_value < ALPHA and _moved_enough(r_before, r_after)
    return FigureChange(known.group, known.subject, known.metric, known.unit, r_before, r_after,
                        k_before, k_after, p_value, test, beyond, direction if beyond else "same")


@dataclass(frozen=True)
class FindingDelta:
    change: FindingChange
    kind: str
    pod: str | None
    cpu: int | None
    severity_before: str | None
    severity_after: str | None
    summary: str

    def to_json(self) -> dict:
        return {"change": self.change, "kind": self.kind, "pod": self.pod, "cpu": self.cpu,
                "severity_before": self.severity_before, "severity_after": self.severity_after,
                "summary": self.summary}


def _finding_key(finding: Mapping[str, Any]) -> tuple[str, str | None, int | None]:
    return str(finding.get("kind")), finding.get("pod"), finding.get("cpu")


def compare_findings(before: list[Mapping[str, Any]], after: list[Mapping[str, Any]]) -> list[FindingDelta]:
    """Findings that appeared, were resolved, or changed severity or score by MIN_RATIO."""
    old = {_finding_key(f): f for f in before}
    new = {_finding_key(f): f for f in after}
    deltas = []
    for key in sorted(set(old) | set(new), key=lambda k: (k[0], k[1] or "", -1 if k[2] is None else k[2])):
        a, b = old.get(key), new.get(key)
        change: FindingChange | None
        if a is None:
            change = "appeared"
        elif b is None:
            change = "resolved"
        else:
            rank_a, rank_b = SEVERITY_RANK.get(a.get("severity"), 3), SEVERITY_RANK.get(b.get("severity"), 3)
            score_a, score_b = float(a.get("score") or 0), float(b.get("score") or 0)
            if rank_b < rank_a or (rank_b == rank_a and score_b >= MIN_RATIO * score_a > 0):
                change = "worse"
            elif rank_b > rank_a or (rank_b == rank_a and score_a >= MIN_RATIO * score_b > 0):
                change = "better"
            else:
                change = None
        if change is None:
            continue
        shown = b if b is not None else a
        deltas.append(FindingDelta(change, key[0], key[1], key[2], a.get("severity") if a else None,
                                   b.get("severity") if b else None, str(shown.get("summary", ""))))
    return deltas


_FINDING_ORDER = {"appeared": 0, "worse": 1, "resolved": 2, "better": 3}


@dataclass(frozen=True)
class CaptureDiff:
    before_s: float
    after_s: float
    findings: list[FindingDelta]
    changes: list[FigureChange]          # beyond noise, most certain and largest first
    unchanged: int                       # figures compared and found within noise
    notes: list[str] = field(default_factory=list)

    @property
    def worse(self) -> bool:
        return (any(f.change in ("appeared", "worse") for f in self.findings)
                or any(c.direction == "worse" for c in self.changes))

    @property
    def changed(self) -> bool:
        return bool(self.findings or self.changes)

    def to_json(self) -> dict:
        return {"schema": "netprof.diff/v1", "before_s": self.before_s, "after_s": self.after_s,
                "alpha": ALPHA, "min_ratio": MIN_RATIO, "min_cpu_share_delta": MIN_SHARE_DELTA,
                "findings": [f.to_json() for f in self.findings],
                "changes": [c.to_json() for c in self.changes],
                "within_noise": self.unchanged, "worse": self.worse, "notes": self.notes}


def _ordering(change: FigureChange) -> tuple:
    # Most certain first (a fault's signal has a vanishing p-value), then the largest move.
    certainty = change.p_value if change.p_value is not None else ALPHA
    return (certainty, -abs(math.log((change.after_per_s + 1e-9) / (change.before_per_s + 1e-9))))


def diff_captures(before: Mapping[str, Any], after: Mapping[str, Any]) -> CaptureDiff:
    before_s = float(before.get("duration_s") or 0.0)
    after_s = float(after.get("duration_s") or 0.0)
    notes = []
    if before_s <= 0 or after_s <= 0:
        notes.append("a capture has no duration: rates cannot be compared")
        return CaptureDiff(before_s, after_s, [], [], 0, notes)
    release_before = (before.get("kernel") or {}).get("release")
    release_after = (after.get("kernel") or {}).get("release")
    if release_before != release_after:
        notes.append(f"different kernels ({release_before} → {release_after})")
    host_before = (before.get("node") or {}).get("hostname")
    host_after = (after.get("node") or {}).get("hostname")
    if host_before and host_after and host_before != host_after:
        notes.append(f"different nodes ({host_before} → {host_after})")
    old, new = capture_figures(before), capture_figures(after)
    compared = [compare_figure(old.get(key), new.get(key), before_s, after_s) for key in sorted(set(old) | set(new))]
    changes = sorted((c for c in compared if c.beyond_noise), key=_ordering)
    findings = sorted(compare_findings(list(before.get("findings") or []), list(after.get("findings") or [])),
                      key=lambda f: _FINDING_ORDER[f.change])
    return CaptureDiff(before_s, after_s, findings, changes, len(compared) - len(changes), notes)
