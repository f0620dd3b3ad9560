"""`netprof fix`: the plan for this node as a dry run; --apply, --rollback.

The plan comes from a capture: a short live one by default, or a saved one (--from). Node-
scope changes are the only ones ever applied, and only with --apply; pod- and app-scope
fixes are printed and can be written out as files (--out) for the pod spec or the code.
"""
from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.text import Text

from ..analysis.findings import Finding, rank
from ..errors import NetprofError
from ..exports import atomic_write_text
from ..inert import inert
from ..report import SEVERITY_STYLE
from .apply import PlanIdentity, apply_changes, format_report, node_scope_changes, rollback



def load_capture(path: Path) -> dict:
    try:
        doc = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise NetprofError(f"no such capture file: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise NetprofError(f"cannot read {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise NetprofError(f"{path} is not JSON (line {exc.lineno}): write it with `netprof profile --json`") from None
    if not isinstance(doc, dict) or doc.get("schema") != "netprof.profile/v1":
        raise NetprofError(f"{path} is not a netprof capture (schema netprof.profile/v1)")
    return doc


def findings_of(doc: dict) -> list[Finding]:
    try:
        return rank([Finding.from_json(f) for f in doc.get("findings", [])])
    except (KeyError, TypeError, ValueError) as exc:
        raise NetprofError(f"the capture's findings are malformed: {exc}") from None


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


def write_snippets(findings: list[Finding], out_dir: Path) -> list[Path]:
    """Each fix with a snippet (pod-spec YAML, code, the IRQ script) as its own file."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for number, finding in enumerate(findings, 1):
        for index, fix in enumerate(finding.fixes, 1):
            if not fix.snippet:
                continue
            suffix = {"pod": "yaml", "node": "sh"}.get(fix.scope, "txt")
            path = out_dir / f"{number:02d}-{finding.kind}-{index}-{fix.scope}.{suffix}"
            atomic_write_text(path, inert(fix.snippet, multiline=True))  # cat or an editor shows it
            written.append(path)
    return written


def run_fix(*, capture: dict | None, apply: bool, do_rollback: bool, journal_dir: Path,
            out_dir: Path | None, only: set[str] | None, console: Console) -> int:
    if do_rollback:
        report = rollback(journal_dir)
        for line in format_report(report):
            console.print(inert(line), markup=False, highlight=False, soft_wrap=True)  # names hosts, sysctls, values
        return 0 if report.ok else 1
    assert capture is not None
    findings = findings_of(capture)
    if only:
        findings = [f for f in findings if f.kind in only]
    print_plan(findings, console)
    if out_dir is not None:
        for path in write_snippets(findings, out_dir):
            console.print(f"wrote {path}", markup=False, highlight=False, soft_wrap=True)
    changes = node_scope_changes([fix for finding in findings for fix in finding.fixes])
    if not changes:
        console.print("Nothing netprof can apply: the fixes above are pod- or app-scope (see the snippets).")
        return 0
    identity = identity_of(capture)
    report = apply_changes(changes, identity, journal_dir, dry_run=not apply)
    for line in format_report(report):
        console.print(inert(line), markup=False, highlight=False, soft_wrap=True)  # names hosts, sysctls, values
    if not apply:
        console.print(f"dry run: nothing was changed. `netprof fix --apply` makes the {len(changes)} "
                      "node-scope change(s) above and journals the old values for --rollback.")
    return 0 if report.ok else 1
