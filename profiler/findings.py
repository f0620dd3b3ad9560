"""What analysis produces: findings, each with the evidence behind it and the fixes for it.

A Finding is the answer to "what is wrong, where, how bad, how do you know, what do I do".
Fixes carry machine-applicable `changes` (only node-scope ones are ever applied, and only by
`netprof fix --apply`) and the human form: commands, YAML, and the reasoning for each number.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping, get_args

Severity = Literal["critical", "warning", "info"]
# Every kind of finding the detectors (profiler.analysis.detectors) make, and no other: a
# capture file naming another kind is refused when loaded (profiler.capture_file), and the
# kind becomes part of file names (`netprof fix --out`), so it must be one of these.
FindingKind = Literal[
    "tcp-retransmits",
    "listen-overflow",
    "syn-backlog-overflow",
    "softirq-imbalance",
    "napi-budget-exhausted",
    "cpu-backlog-drops",
    "conntrack-insert-failed",
    "conntrack-table-full",
    "socket-rcvbuf-drops",
]
FINDING_KINDS: frozenset[str] = frozenset(get_args(FindingKind))
Scope = Literal["node", "pod", "app"]
SEVERITY_RANK = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class Change:
    """One write `netprof fix --apply` can make and `--rollback` can undo.

    kind: "sysctl" (key = sysctl name; netns = a netns path, None for the node's own) or
    "file" (key = an absolute /proc or /sys path: IRQ affinity, RPS masks).
    """

    kind: Literal["sysctl", "file"]
    key: str
    value: str
    netns: str | None = None
    expected_current: str | None = None  # what the plan saw; apply refuses if it changed

    def to_json(self) -> dict:
        return {"kind": self.kind, "key": self.key, "value": self.value, "netns": self.netns,
                "expected_current": self.expected_current}

    @classmethod
    def from_json(cls, data: dict) -> "Change":
        if data.get("kind") not in ("sysctl", "file"):
            raise ValueError(f"unknown change kind {data.get('kind')!r}")
        return cls(data["kind"], str(data["key"]), str(data["value"]), data.get("netns"),
                   data.get("expected_current"))


@dataclass(frozen=True)
class Fix:
    scope: Scope
    title: str
    rationale: str                      # why this change, why this number (from the evidence)
    commands: tuple[str, ...] = ()      # what an operator would type
    changes: tuple[Change, ...] = ()    # applicable by --apply (node scope only)
    persistence: str = ""               # how to make it survive a reboot / a pod restart
    snippet: str | None = None          # YAML or a patch, for pod- and app-scope fixes

    def to_json(self) -> dict:
        return {
            "scope": self.scope, "title": self.title, "rationale": self.rationale,
            "commands": list(self.commands), "changes": [c.to_json() for c in self.changes],
            "persistence": self.persistence, "snippet": self.snippet,
        }

    @classmethod
    def from_json(cls, data: dict) -> "Fix":
        if data.get("scope") not in ("node", "pod", "app"):
            raise ValueError(f"unknown fix scope {data.get('scope')!r}")
        return cls(scope=data["scope"], title=str(data["title"]), rationale=str(data.get("rationale", "")),
                   commands=tuple(data.get("commands", ())),
                   changes=tuple(Change.from_json(c) for c in data.get("changes", ())),
                   persistence=str(data.get("persistence", "")), snippet=data.get("snippet"))


@dataclass(frozen=True)
class Finding:
    kind: FindingKind
    severity: Severity
    summary: str
    evidence: Mapping[str, Any]
    fixes: tuple[Fix, ...] = ()
    pod: str | None = None
    cpu: int | None = None
    # How bad (events/s, or a share of CPU time): ranks findings of the same severity, after
    # the cause-before-consequence rule of rank().
    score: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in FINDING_KINDS:
            raise ValueError(f"unknown finding kind {self.kind!r}")

    def to_json(self) -> dict:
        return {
            "kind": self.kind, "severity": self.severity, "pod": self.pod, "cpu": self.cpu,
            "summary": self.summary, "evidence": dict(self.evidence), "score": round(self.score, 3),
            "fixes": [fix.to_json() for fix in self.fixes],
        }

    @classmethod
    def from_json(cls, data: dict) -> "Finding":
        if data.get("severity") not in SEVERITY_RANK:
            raise ValueError(f"unknown severity {data.get('severity')!r}")
        return cls(kind=str(data["kind"]), severity=data["severity"], summary=str(data["summary"]),
                   evidence=dict(data.get("evidence", {})),
                   fixes=tuple(Fix.from_json(f) for f in data.get("fixes", ())),
                   pod=data.get("pod"), cpu=data.get("cpu"), score=float(data.get("score", 0.0)))


# A finding that is the consequence of another on the same CPU, and the kind of its cause. One
# CPU doing the node's NET_RX work runs out of NAPI budget (time_squeeze) because of that: the
# cause's fix (spread the work) is the one to try first, and the two scores -- a squeeze rate
# and a share of CPU time -- do not compare. So a consequence ranked above its cause moves to
# just below it; it never moves up.
CONSEQUENCE_OF: dict[str, str] = {"napi-budget-exhausted": "softirq-imbalance"}


def rank(findings: list[Finding]) -> list[Finding]:
    ranked = sorted(findings, key=lambda f: (SEVERITY_RANK[f.severity], -f.score, f.kind, f.pod or "", f.cpu or -1))
    for finding in list(ranked):
        cause_kind = CONSEQUENCE_OF.get(finding.kind)
        cause = next((f for f in ranked if f.kind == cause_kind and f.cpu == finding.cpu), None)
        if cause is None:
            continue
        here = next(i for i, f in enumerate(ranked) if f is finding)
        there = next(i for i, f in enumerate(ranked) if f is cause)
        if here < there:
            ranked.insert(there, ranked.pop(here))   # lands just below the cause
    return ranked
