"""Did the fix work? Judging a finding's own figure before and after `fix --apply`.

Each finding kind has one figure its fixes are meant to bring down (the one its detector
measured): CPU_BACKLOG drops for a full input backlog, the busy CPU's NET_RX time for a
softirq imbalance (and the busiest CPU's, whichever it is then: a pile moved whole to another
CPU is no spread), the pod's listen overflows for a full accept queue, and so on. A fix is
kept only when that figure fell beyond noise (profiler.analysis.diff decides, the same test
`netprof diff` uses) *and* came back when the fix was undone for one more window: a node
drifts (a burst fades, a CPU gets busier), and one before/after pair cannot tell that from
the fix, while a figure that falls with the fix and rises without it can only be the fix's
(an A-B-A design). It is rolled back when the figure did not move, or rose, or did not come
back; and when the node itself changed under the verification -- the traffic that made the
trouble fell away -- the verdict is "inconclusive", and the fix is rolled back too: an
improvement that the load explains is no evidence for the fix.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

from ..analysis.diff import Figure, FigureChange, capture_figures, compare_figure
from ..analysis.findings import Finding
from ..document import ProfileDocument
from .apply import ApplyReport, apply_changes, rollback
from .identity import PlanIdentity
from .journal import record_verdicts
from .targets import node_scope_changes

Outcome = Literal["kept", "rolled-back", "inconclusive"]
FigureKey = tuple[str, str, str]


def target_figure(finding: Mapping[str, Any]) -> FigureKey | None:
    """The (group, subject, metric) figure a finding's fixes should bring down, or None."""
    kind, pod, cpu = finding.get("kind"), finding.get("pod"), finding.get("cpu")
    if kind == "cpu-backlog-drops":
        return ("reason", "CPU_BACKLOG", "drops")
    if kind == "softirq-imbalance" and cpu is not None:
        return ("cpu", f"cpu{cpu}", "NET_RX time")
    if kind == "conntrack-table-full" and pod:
        return ("pod", pod, "conntrack drop")
    if kind == "socket-rcvbuf-drops" and pod:
        return ("pod", pod, "drops SOCKET_RCVBUFF")
    if kind in ("listen-overflow", "syn-backlog-overflow") and pod:
        return ("pod", pod, "listen overflows")
    if kind == "tcp-retransmits" and pod:
        return ("pod", pod, "retransmitted segments")
    return None


def _napi_figure(figures: Mapping[FigureKey, Figure], cpu: int) -> FigureKey | None:
    prefix = "NAPI budget exhausted"
    return next((key for key in figures if key[:2] == ("cpu", f"cpu{cpu}") and key[2].startswith(prefix)), None)


def _figure_key(finding: Mapping[str, Any], before: Mapping[FigureKey, Figure]) -> FigureKey | None:
    if finding.get("kind") == "napi-budget-exhausted" and finding.get("cpu") is not None:
        return _napi_figure(before, int(finding["cpu"]))
    return target_figure(finding)


def busiest_net_rx(doc: Mapping[str, Any]) -> Figure | None:
    """The NET_RX time of the CPU that spent the most in it over a capture."""
    cpus = ProfileDocument(doc).cpus
    if not cpus:
        return None
    busiest = max(cpus, key=lambda cpu: cpu.softirq_time_ns("NET_RX"))
    return Figure("cpu", f"cpu{busiest.cpu}", "NET_RX time", busiest.softirq_time_ns("NET_RX"), "ns")


def _imbalance_moved(finding: Mapping[str, Any], before: Mapping[str, Any], after: Mapping[str, Any]) -> str | None:
    """Why a softirq-imbalance "improvement" is none, or None. The busy CPU's NET_RX time can
    fall because the pile moved whole to another CPU (seen in the mq guest: the one busy
    queue's IRQ moved from CPU 0 to CPU 1): the imbalance is the busiest CPU's time, whichever
    CPU that is, and it must fall beyond noise too."""
    if finding.get("kind") != "softirq-imbalance":
        return None
    top_before, top_after = busiest_net_rx(before), busiest_net_rx(after)
    if top_before is None or top_after is None:
        return None
    change = compare_figure(top_before, top_after, float(before["duration_s"]), float(after["duration_s"]))
    if change.beyond_noise and change.direction == "better":
        return None
    return (f"the NET_RX time moved to {top_after.subject}, {100 * change.after_per_s / 1e9:.1f}% of it "
            f"(the busiest CPU took {100 * change.before_per_s / 1e9:.1f}% before): the imbalance moved, "
            "it was not spread")


def packets_processed(doc: Mapping[str, Any]) -> int:
    """The node's receive work: packets its CPUs processed (softnet), or NET_RX runs."""
    cpus = ProfileDocument(doc).cpus
    processed = sum(int(cpu.softnet.get("processed", 0)) for cpu in cpus)
    if processed:
        return processed
    return sum(cpu.softirq_count("NET_RX") for cpu in cpus)


def load_change(before: Mapping[str, Any], after: Mapping[str, Any]) -> FigureChange:
    before_s, after_s = float(before["duration_s"]), float(after["duration_s"])
    return compare_figure(Figure("node", "node", "packets processed", packets_processed(before)),
                          Figure("node", "node", "packets processed", packets_processed(after)),
                          before_s, after_s)


@dataclass(frozen=True)
class Verdict:
    kind: str
    pod: str | None
    cpu: int | None
    outcome: Outcome
    figure: str                 # what was compared, in words
    before_per_s: float | None
    after_per_s: float | None
    why: str
    unit: str = "events"        # events, or ns (a time: shown as a share of a CPU)
    undone_per_s: float | None = None   # the figure while the fix was undone to confirm it

    def to_json(self) -> dict:
        return {"kind": self.kind, "pod": self.pod, "cpu": self.cpu, "outcome": self.outcome,
                "figure": self.figure, "unit": self.unit, "before_per_s": self.before_per_s,
                "after_per_s": self.after_per_s, "undone_per_s": self.undone_per_s, "why": self.why}

    def headline(self) -> str:
        if self.before_per_s is None or self.after_per_s is None:
            return f"{self.outcome}: {self.kind}: {self.why}"
        unit = "% cpu" if self.unit == "ns" else "/s"
        scale = 100 / 1e9 if unit == "% cpu" else 1.0
        undone = (f", {self.undone_per_s * scale:,.1f}{unit} undone" if self.undone_per_s is not None else "")
        return (f"{self.outcome}: {self.figure} {self.before_per_s * scale:,.1f}{unit} → "
                f"{self.after_per_s * scale:,.1f}{unit}{undone} ({self.why})")


def _compare(key: FigureKey, old: Mapping[FigureKey, Figure], new: Mapping[FigureKey, Figure],
             old_s: float, new_s: float) -> FigureChange:
    """compare_figure where a capture without the figure counted none of it; absent from
    both (no drop of that reason in either window), it is 0 → 0: no change."""
    known = old.get(key) or new.get(key) or Figure(*key, 0)
    zero = Figure(*key, 0, known.unit)
    return compare_figure(old.get(key, zero), new.get(key, zero), old_s, new_s)


def judge(finding: Mapping[str, Any], before: Mapping[str, Any], after: Mapping[str, Any]) -> Verdict:
    """Keep or roll back the fixes of one finding, from the captures before and after them."""
    kind, pod, cpu = str(finding.get("kind")), finding.get("pod"), finding.get("cpu")
    old, new = capture_figures(before), capture_figures(after)
    key = _figure_key(finding, old)
    if key is None:
        return Verdict(kind, pod, cpu, "rolled-back", kind, None, None,
                       "netprof has no figure to verify this kind of fix against")
    words = f"{key[2]} of {key[1]}" if key[0] != "reason" else f"{key[1]} {key[2]}"
    change = _compare(key, old, new, float(before["duration_s"]), float(after["duration_s"]))
    load = load_change(before, after)

    def verdict(outcome: Outcome, why: str) -> Verdict:
        return Verdict(kind, pod, cpu, outcome, words, change.before_per_s, change.after_per_s, why, change.unit)

    if load.beyond_noise and load.direction == "better":
        # Less traffic explains a fall of any trouble figure as well as the fix does.
        return verdict("inconclusive", f"the node's traffic fell from {load.before_per_s:,.0f} to "
                                       f"{load.after_per_s:,.0f} packets/s during the verification")
    if change.beyond_noise and change.direction == "better":
        moved = _imbalance_moved(finding, before, after)
        if moved is not None:
            return verdict("rolled-back", moved)
        how = f"p={change.p_value:.1e}" if change.p_value is not None else "beyond the threshold"
        return verdict("kept", f"improved beyond noise, {how}")
    if change.beyond_noise:
        return verdict("rolled-back", "it got worse")
    return verdict("rolled-back", "no change beyond noise")


def confirm(tentative: Verdict, finding: Mapping[str, Any], after: Mapping[str, Any],
            undone: Mapping[str, Any]) -> Verdict:
    """The second half of the A-B-A: a tentatively kept fix stays only if its figure came
    back beyond noise in the window where the fix was undone."""
    old, new = capture_figures(after), capture_figures(undone)
    key = _figure_key(finding, old) or _figure_key(finding, new)
    assert key is not None, "a kept verdict has a figure"
    back = _compare(key, old, new, float(after["duration_s"]), float(undone["duration_s"]))
    load = load_change(after, undone)
    rebound = replace(tentative, undone_per_s=back.after_per_s)
    if back.beyond_noise and back.direction == "worse":
        return replace(rebound, why=f"{tentative.why}; back when undone")
    if load.beyond_noise and load.direction == "better":
        return replace(rebound, outcome="inconclusive",
                       why=f"the node's traffic fell from {load.before_per_s:,.0f} to {load.after_per_s:,.0f} "
                           "packets/s while the fix was undone")
    return replace(rebound, outcome="rolled-back",
                   why="it did not come back when the fix was undone: the fall was not the fix's")


# --------------------------------------------------------------------------- apply, then judge


@dataclass(frozen=True)
class VerifiedApply:
    applied: ApplyReport
    verdicts: tuple[Verdict, ...] = ()
    rollback: ApplyReport | None = None     # every change, once judged (the A-B-A's second A)
    reapplied: ApplyReport | None = None    # the fixes kept, made again after their confirmation

    @property
    def ok(self) -> bool:
        return (self.applied.ok and (self.rollback is None or self.rollback.ok)
                and (self.reapplied is None or self.reapplied.ok))


def apply_and_verify(findings: list[Finding], before: Mapping[str, Any], capture_after: Callable[[], Mapping[str, Any]],
                     identity: PlanIdentity, journal_dir: Path, *,
                     allowed_sysctls: frozenset[str] | None = None) -> VerifiedApply:
    """Apply the node-scope fixes of `findings` and capture again (`capture_after`); a finding
    whose own figure improved beyond noise is tentatively kept. Then every change of this
    apply is rolled back and, if any finding was tentatively kept, `capture_after` runs once
    more: a finding is kept only if its figure came back, and the changes of the kept findings
    are applied again (a new apply in the journal, what `--rollback` undoes).

    A change two findings share stays if either keeps it. The verdicts are recorded in the
    journal beside the re-apply's entries (the first apply's when nothing was kept)."""
    judged = [finding for finding in findings if node_scope_changes(finding.fixes)]
    changes = node_scope_changes([fix for finding in judged for fix in finding.fixes])
    applied = apply_changes(changes, identity, journal_dir)
    if not applied.ok or not applied.apply_id:
        # Refused, failed (and undone), or nothing needed writing: nothing to judge.
        return VerifiedApply(applied)
    after = capture_after()
    verdicts = [judge(finding.to_json(), before, after) for finding in judged]
    undone = rollback(journal_dir, allowed_sysctls=allowed_sysctls, apply_id=applied.apply_id)
    if undone.ok and any(verdict.outcome == "kept" for verdict in verdicts):
        without = capture_after()
        verdicts = [confirm(verdict, finding.to_json(), after, without) if verdict.outcome == "kept" else verdict
                    for finding, verdict in zip(judged, verdicts)]
    elif not undone.ok:
        verdicts = [replace(verdict, outcome="rolled-back", why=f"{verdict.why}; the rollback to confirm it failed")
                    if verdict.outcome == "kept" else verdict for verdict in verdicts]
    kept = [finding for finding, verdict in zip(judged, verdicts) if verdict.outcome == "kept"]
    reapplied = None
    if kept:
        reapplied = apply_changes(node_scope_changes([fix for finding in kept for fix in finding.fixes]),
                                  identity, journal_dir)
    # After the re-apply: a journal whose entries were all restored is started afresh by the
    # next apply, and the verdicts belong beside the entries that are still open.
    holder = reapplied.apply_id if reapplied is not None and reapplied.apply_id else applied.apply_id
    record_verdicts(journal_dir, holder, [verdict.to_json() for verdict in verdicts])
    return VerifiedApply(applied, tuple(verdicts), undone, reapplied)
