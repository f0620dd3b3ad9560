"""rank(): severity first, then score; a consequence follows its cause on the same CPU."""
from __future__ import annotations

from profiler.findings import Finding, rank


def finding(kind: str, severity: str = "warning", score: float = 0.0, cpu: int | None = None,
            pod: str | None = None) -> Finding:
    return Finding(kind=kind, severity=severity, summary=kind, evidence={}, score=score, cpu=cpu, pod=pod)


def kinds(findings: list[Finding]) -> list[tuple[str, int | None]]:
    return [(f.kind, f.cpu) for f in findings]


def test_severity_then_score():
    ranked = rank([finding("tcp-retransmits", score=5, pod="a"), finding("listen-overflow", "critical", score=1, pod="b"),
                   finding("socket-rcvbuf-drops", score=50, pod="c")])
    assert [f.kind for f in ranked] == ["listen-overflow", "socket-rcvbuf-drops", "tcp-retransmits"]


def test_napi_budget_on_the_imbalanced_cpu_moves_just_below_the_imbalance_whatever_the_scores():
    # As under QEMU (6.12, one TCG thread): a time-squeeze rate outscored a 0.6 share.
    ranked = rank([finding("napi-budget-exhausted", score=40.0, cpu=0),
                   finding("softirq-imbalance", score=0.6, cpu=0),
                   finding("tcp-retransmits", score=10.0, pod="p"),
                   finding("socket-rcvbuf-drops", score=0.1, pod="q")])
    assert kinds(ranked) == [("tcp-retransmits", None), ("softirq-imbalance", 0), ("napi-budget-exhausted", 0),
                             ("socket-rcvbuf-drops", None)]


def test_napi_budget_on_another_cpu_keeps_its_own_rank():
    ranked = rank([finding("napi-budget-exhausted", score=40.0, cpu=1), finding("softirq-imbalance", score=0.6, cpu=0)])
    assert kinds(ranked) == [("napi-budget-exhausted", 1), ("softirq-imbalance", 0)]


def test_a_consequence_already_below_its_cause_never_moves_up():
    # A warning is not lifted above a critical finding to sit next to its critical cause.
    ranked = rank([finding("napi-budget-exhausted", score=9.0, cpu=1),
                   finding("softirq-imbalance", "critical", score=0.9, cpu=1),
                   finding("listen-overflow", "critical", score=0.5, pod="p")])
    assert kinds(ranked) == [("softirq-imbalance", 1), ("listen-overflow", None), ("napi-budget-exhausted", 1)]
