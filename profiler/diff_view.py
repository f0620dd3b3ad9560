"""`netprof diff` as text: the few changes that matter first, then how the rest was judged."""
from __future__ import annotations

import math

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .analysis.diff import ALPHA, MIN_RATIO, CaptureDiff, FigureChange
from .inert import inert
from .report import SEVERITY_STYLE

MAX_CHANGES_SHOWN = 12
_FINDING_STYLE = {"appeared": "bold red", "worse": "red", "resolved": "green", "better": "green"}


def _rate(change: FigureChange, per_s: float) -> str:
    if change.unit == "ns":
        return f"{100 * per_s / 1e9:.1f}% cpu"
    return f"{per_s:,.1f}/s" if per_s < 1000 else f"{per_s:,.0f}/s"


def _ratio(change: FigureChange) -> str:
    ratio = change.ratio
    if math.isinf(ratio):
        return "new"
    if ratio == 0:
        return "gone"
    return f"×{ratio:.2f}" if ratio >= 1 else f"÷{1 / ratio:.2f}"


def _p(change: FigureChange) -> str:
    if change.p_value is None:
        return "threshold"
    return "<1e-12" if change.p_value < 1e-12 else f"{change.p_value:.1e}"


def _changes_table(changes: list[FigureChange]) -> Table:
    table = Table(title="Changes beyond noise (per second)", title_justify="left", show_edge=False, pad_edge=False)
    table.add_column("", no_wrap=True)
    table.add_column("figure", overflow="fold", ratio=1)
    for name in ("before", "after", "change", "p"):
        table.add_column(name, justify="right", no_wrap=True)
    for change in changes[:MAX_CHANGES_SHOWN]:
        style = "red" if change.direction == "worse" else "green"
        table.add_row(Text(change.direction, style=style),
                      Text(f"{change.group} {inert(change.subject)}: {inert(change.metric)}"),
                      _rate(change, change.before_per_s),
                      _rate(change, change.after_per_s), _ratio(change), _p(change))
    return table


def render_diff(diff: CaptureDiff, before_name: str, after_name: str) -> Group:
    parts: list[RenderableType] = []
    head = Text("netprof diff", style="bold")
    head.append(f"  {inert(before_name)} ({diff.before_s:.1f}s) → {inert(after_name)} ({diff.after_s:.1f}s)")
    parts.append(head)
    for note in diff.notes:
        parts.append(Text(f"note: {inert(note)}", style="yellow"))
    if not diff.changed:
        parts.append(Text("No change beyond noise.", style="bold green"))
    for finding in diff.findings:
        line = Text(f"finding {finding.change}: ", style=_FINDING_STYLE[finding.change])
        severity = finding.severity_after or finding.severity_before or ""
        line.append(severity, style=SEVERITY_STYLE.get(severity, ""))
        if finding.change in ("worse", "better") and finding.severity_before != finding.severity_after:
            line.append(f" (was {finding.severity_before})")
        line.append(f" {inert(finding.kind)}: {inert(finding.summary)}")
        parts.append(line)
    if diff.changes:
        parts.append(Text(""))
        parts.append(_changes_table(diff.changes))
        if len(diff.changes) > MAX_CHANGES_SHOWN:
            parts.append(Text(f"… and {len(diff.changes) - MAX_CHANGES_SHOWN} more (--json lists all)", style="dim"))
    parts.append(Text(""))
    parts.append(Text(
        f"{diff.unchanged} figure(s) within noise. Event counts: exact conditional Poisson test of the two "
        f"rates (normal approximation past 100k events), beyond noise at p < {ALPHA:g} and a move of "
        f"×{MIN_RATIO:g} either way; softirq time: a threshold on the share of a CPU.", style="dim"))
    return Group(*parts)
