"""`netprof fix`: the plan for this node as a dry run; --apply, --rollback.

The plan comes from a capture: a short live one by default, or a saved one (--from). Node-
scope changes are the only ones ever applied, and only with --apply; pod- and app-scope
fixes are printed and can be written out as files (--out) for the pod spec or the code.
"""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.text import Text

from ..analysis.detectors import AnalysisContext, analyze
from ..document import ProfileDocument
from ..analysis.findings import FINDING_KINDS, Change, Finding, rank
from ..analysis.fixes import APPLICABLE_SYSCTLS
from ..errors import NetprofError
from ..exports import atomic_write_text
from ..inert import inert
from ..report import SEVERITY_STYLE

if TYPE_CHECKING:
    from .verify import VerifiedApply
from .apply import apply_changes, format_report, rollback
from .identity import PlanIdentity, current_identity
from .targets import node_scope_changes



def findings_of(doc: dict) -> list[Finding]:
    """The findings a capture made in this process (`netprof fix` without --from): netprof's own."""
    try:
        return rank([Finding.from_json(f) for f in doc.get("findings", [])])
    except (KeyError, TypeError, ValueError) as exc:
        raise NetprofError(f"the capture's findings are malformed: {exc}") from None


def replan(doc: dict) -> list[Finding]:
    """The findings of a saved capture, worked out again by netprof's own detectors.

    A capture file is input from anywhere: the findings and fixes stored in it (titles,
    commands, snippets, sysctl names, netns paths) are never used for a plan. Only its data
    (counters, sysctl values the node had, pod names), which the loader validated, goes
    through the same analysis a live capture gets. Netns paths and the IRQ topology are this
    node's own, and only when the capture is from this boot: a netns inode or an IRQ number
    of another boot names nothing here.
    """
    document = ProfileDocument(doc)
    return analyze(document, _context_for(document))


def _context_for(document: ProfileDocument) -> AnalysisContext:
    try:
        here = current_identity()
    except NetprofError:
        return AnalysisContext()
    if document.node.get("boot_id") != here.boot_id:
        return AnalysisContext()
    from ..pod_listing import default_pod_directory
    from ..system.irqbalance import read_irqbalance
    from ..system.irqs import read_irq_topology

    in_capture = {pod.netns for pod in document.pods}
    paths = default_pod_directory().netns_paths()
    return AnalysisContext(
        netns_paths={inode: str(path) for inode, path in paths.items() if inode in in_capture},
        topology=read_irq_topology(), irqbalance_running=(irqbalance := read_irqbalance()).running,
        irqbalance=irqbalance)


def identity_of(doc: dict) -> PlanIdentity:
    node = doc.get("node") or {}
    if not node.get("boot_id"):
        raise NetprofError("the capture has no node identity (boot id): it cannot be applied; "
                           "capture again on this node")
    return PlanIdentity(kernel_release=node.get("kernel_release", ""), boot_id=node["boot_id"],
                        hostname=node.get("hostname", ""))


def print_plan(findings: list[Finding], console: Console) -> None:
    """The plan as an operator reads it. Findings may come from a capture file anyone wrote:
    each of their strings is made inert, and printed as `Text` (never markup)."""
    if not findings:
        console.print("No findings: nothing to fix on this node for what the capture saw.")
        return
    for number, finding in enumerate(findings, 1):
        head = Text(f"{number}. ")
        head.append(finding.severity, style=SEVERITY_STYLE.get(finding.severity, ""))
        head.append(f" {inert(finding.kind)}: {inert(finding.summary)}")
        console.print(head)
        for fix in finding.fixes:
            console.print(Text(f"   [{inert(fix.scope)}] {inert(fix.title)}", style="bold"))
            for line in inert(fix.rationale, multiline=True).splitlines():
                console.print(Text(f"      {line}", style="dim"))
            for command in fix.commands:
                console.print(Text(f"      $ {inert(command)}"))
            if fix.persistence:
                console.print(Text(f"      persist: {inert(fix.persistence)}", style="dim"))
        console.print()


_SNIPPET_SUFFIX = {"pod": "yaml", "node": "sh", "app": "txt"}
_SNIPPET_NAME = re.compile(r"[0-9]{2,4}-[a-z0-9]+(?:-[a-z0-9]+)*-[0-9]{1,3}-(?:node|pod|app)\.(?:yaml|sh|txt)")


def snippet_path(out_dir: Path, number: int, finding: Finding, index: int, scope: str) -> Path:
    """Where a snippet goes: a name made only of checked parts, and a file directly in out_dir."""
    if finding.kind not in FINDING_KINDS or scope not in _SNIPPET_SUFFIX:
        raise NetprofError(f"refusing a snippet for an unknown finding kind or scope ({finding.kind!r:.40}, {scope!r:.20})")
    name = f"{number:02d}-{finding.kind}-{index}-{scope}.{_SNIPPET_SUFFIX[scope]}"
    path = out_dir / name
    # Belt and braces: the name cannot hold a separator, so the file must sit right in out_dir.
    if not _SNIPPET_NAME.fullmatch(name) or path.resolve().parent != out_dir.resolve():
        raise NetprofError(f"refusing to write a snippet outside {out_dir}: {name!r:.80}")
    return path


def write_snippets(findings: list[Finding], out_dir: Path) -> list[Path]:
    """Each fix with a snippet (pod-spec YAML, code, the IRQ script) as its own file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for number, finding in enumerate(findings, 1):
        for index, fix in enumerate(finding.fixes, 1):
            if not fix.snippet:
                continue
            path = snippet_path(out_dir, number, finding, index, fix.scope)
            atomic_write_text(path, inert(fix.snippet, multiline=True))  # cat or an editor shows it
            written.append(path)
    return written


def applicable(changes: tuple[Change, ...]) -> tuple[tuple[Change, ...], list[str]]:
    """The changes whose sysctl is one netprof's fixes set (APPLICABLE_SYSCTLS), and why not for the others.

    The apply engine itself allows any net.* sysctl (its API is for netprof's own plans); a
    plan that came through a capture is held to the closed list its detectors can produce.
    """
    kept, refused = [], []
    for change in changes:
        if change.kind == "sysctl" and change.key not in APPLICABLE_SYSCTLS:
            refused.append(f"refused {change.key!r:.80}: not a sysctl any netprof fix changes")
        else:
            kept.append(change)
    return tuple(kept), refused


def _print_lines(lines: list[str], console: Console) -> None:
    for line in lines:
        console.print(inert(line), markup=False, highlight=False, soft_wrap=True)  # names hosts, sysctls, values


def print_verification(result: "VerifiedApply", console: Console) -> None:
    _print_lines(format_report(result.applied), console)
    for verdict in result.verdicts:
        style = {"kept": "green", "rolled-back": "yellow", "inconclusive": "yellow"}[verdict.outcome]
        console.print(Text(inert(verdict.headline()).replace("rolled-back:", "rolled back:", 1), style=style))
    if result.rollback is not None:
        # Every change is undone once judged: the kept ones to see their figure come back.
        _print_lines(format_report(result.rollback), console)
    if result.reapplied is not None:
        console.print("the kept fixes, made again (`netprof fix --rollback` undoes them):",
                      markup=False, highlight=False)
        _print_lines(format_report(result.reapplied), console)


def run_fix(*, capture: dict | None, apply: bool, do_rollback: bool, journal_dir: Path,
            out_dir: Path | None, only: set[str] | None, console: Console,
            findings: list[Finding] | None = None,
            verify_with: "Callable[[], dict] | None" = None) -> int:
    """findings: the plan (netprof's own; `replan()` for a saved capture); default: the capture's.
    verify_with: with apply, how to capture again after the changes (`fix --verify`): each
    finding's fixes are kept only if its own figure improved beyond noise."""
    if do_rollback:
        report = rollback(journal_dir, allowed_sysctls=APPLICABLE_SYSCTLS)
        for line in format_report(report):
            console.print(inert(line), markup=False, highlight=False, soft_wrap=True)  # names hosts, sysctls, values
        return 0 if report.ok else 1
    assert capture is not None
    if only:
        unknown = sorted(only - FINDING_KINDS)
        if unknown:
            raise NetprofError(f"--only: no finding kind {unknown[0]!r:.60}; kinds are {', '.join(sorted(FINDING_KINDS))}")
    findings = findings_of(capture) if findings is None else findings
    if only:
        findings = [f for f in findings if f.kind in only]
    print_plan(findings, console)
    if out_dir is not None:
        for path in write_snippets(findings, out_dir):
            console.print(f"wrote {path}", markup=False, highlight=False, soft_wrap=True)
    changes, refused = applicable(node_scope_changes([fix for finding in findings for fix in finding.fixes]))
    if refused:
        for line in refused:
            console.print(line, markup=False, highlight=False, soft_wrap=True)
        console.print("nothing was written", markup=False, highlight=False)
        return 1
    if not changes:
        console.print("Nothing netprof can apply: the fixes above are pod- or app-scope (see the snippets).")
        return 0
    identity = identity_of(capture)
    if apply and verify_with is not None:
        from .verify import apply_and_verify

        result = apply_and_verify(findings, capture, verify_with, identity, journal_dir,
                                  allowed_sysctls=APPLICABLE_SYSCTLS)
        print_verification(result, console)
        return 0 if result.ok else 1
    report = apply_changes(changes, identity, journal_dir, dry_run=not apply)
    for line in format_report(report):
        console.print(inert(line), markup=False, highlight=False, soft_wrap=True)  # names hosts, sysctls, values
    if not apply:
        console.print(f"dry run: nothing was changed. `netprof fix --apply` makes the {len(changes)} "
                      "node-scope change(s) above and journals the old values for --rollback.")
    return 0 if report.ok else 1
