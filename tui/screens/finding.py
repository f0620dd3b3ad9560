"""One finding: what, where, the evidence, and each fix with its scope, commands and YAML."""
from __future__ import annotations

from typing import Any, Mapping

from rich.console import RenderableType
from rich.padding import Padding
from rich.syntax import Syntax
from rich.text import Text
from textual.binding import Binding

from ..model import SEVERITY_LABEL, DashboardModel, FindingRow
from ..style import style
from .detail import DetailScreen, kv_table, section

SCOPE_MEANING = {
    "node": "on the node: sysctl, IRQ affinity or a file under /proc or /sys",
    "pod": "in the pod spec: Kubernetes applies it when the pod is (re)created",
    "app": "in the application: its code or its configuration",
}


SNIPPET_LABEL = {"yaml": "YAML (pod spec):", "bash": "script:", "text": "code:"}


def format_evidence_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_evidence_value(v) for v in value) or "—"
    if isinstance(value, Mapping):
        return ", ".join(f"{k} {format_evidence_value(v)}" for k, v in value.items()) or "—"
    if value is None:
        return "not seen"
    return str(value)


def fix_text(fix: Mapping[str, Any]) -> str:
    """What `y` copies for one fix: its commands and its snippet, as an operator pastes them."""
    parts = [f"# [{fix.get('scope')}] {fix.get('title')}"]
    parts += list(fix.get("commands") or ())
    if fix.get("snippet"):
        parts.append(str(fix["snippet"]).rstrip("\n"))
    if fix.get("persistence"):
        parts.append(f"# persist: {fix['persistence']}")
    return "\n".join(parts)


def snippet_lexer(snippet: str) -> str:
    head = snippet.lstrip()
    if head.startswith(("spec:", "apiVersion:", "metadata:", "- name:", "securityContext:")):
        return "yaml"
    if head.startswith(("#!", "echo ", "sysctl ")):
        return "bash"
    return "text"


def render_finding(finding: Mapping[str, Any]) -> list[RenderableType]:
    severity = finding.get("severity", "info")
    where = finding.get("pod") or (f"CPU {finding['cpu']}" if finding.get("cpu") is not None else "node")
    title = Text()
    title.append(f" {SEVERITY_LABEL.get(severity, severity)} ", style=f"reverse {style(severity)}")
    title.append(f"  {finding.get('kind', '?')}", style="bold")
    title.append(f"  {where}")
    parts: list[RenderableType] = [title, Text(""), Text(str(finding.get("summary", "")))]

    parts.append(section("Evidence"))
    evidence = kv_table()
    for key, value in (finding.get("evidence") or {}).items():
        evidence.add_row(str(key), format_evidence_value(value))
    parts.append(evidence)

    fixes = finding.get("fixes") or ()
    parts.append(section(f"Fixes ({len(fixes)})" if fixes else "Fixes: none proposed"))
    for number, fix in enumerate(fixes, 1):
        scope = str(fix.get("scope", "?"))
        head = Text(f"\n{number}. ", style="bold")
        head.append(f"[{scope}]", style="bold reverse")
        head.append(f" {fix.get('title', '')}", style="bold")
        parts.append(head)
        meaning = SCOPE_MEANING.get(scope, "")
        if scope == "node" and fix.get("changes"):
            meaning += "; `netprof fix --apply` makes this change (and can roll it back)"
        elif scope != "node":
            meaning += "; printed, never applied by netprof"
        parts.append(Padding(Text(f"scope: {meaning}", style="dim"), (0, 0, 0, 3)))
        if fix.get("rationale"):
            parts.append(Padding(Text(str(fix["rationale"])), (0, 0, 0, 3)))
        for command in fix.get("commands") or ():
            parts.append(Padding(Text(f"$ {command}", style="bold"), (0, 0, 0, 3)))
        if fix.get("snippet"):
            snippet = str(fix["snippet"]).rstrip("\n")
            lexer = snippet_lexer(snippet)
            parts.append(Padding(Text(SNIPPET_LABEL.get(lexer, "code:"), style="dim"), (0, 0, 0, 3)))
            parts.append(Padding(Syntax(snippet, lexer, theme="ansi_dark", word_wrap=True,
                                        background_color="default"), (0, 0, 0, 5)))
        if fix.get("persistence"):
            parts.append(Padding(Text(f"persist: {fix['persistence']}", style="dim"), (0, 0, 0, 3)))
    parts.append(Text(""))
    parts.append(Text("y copies every fix's commands and YAML · export (e), then "
                      "`netprof fix --from DIR/capture.json` plans or applies them", style="dim"))
    return parts


class FindingScreen(DetailScreen):
    BINDINGS = [
        Binding("y", "copy", "copy fixes"),
        Binding("n", "step(1)", "next"),
        Binding("N", "step(-1)", "previous"),
    ]

    def __init__(self, key: str):
        super().__init__()
        self.key = key
        self._last: FindingRow | None = None

    def _row(self, model: DashboardModel) -> FindingRow | None:
        return next((f for f in model.findings if f.key == self.key), None)

    def render_body(self, model: DashboardModel) -> list[RenderableType]:
        row = self._row(model)
        if row is not None:
            self._last = row
        elif self._last is None:
            return [Text("This finding is no longer reported.", style="bold")]
        parts = render_finding(self._last.data)
        if row is None:
            parts.insert(0, Text("No longer reported in the current window; as last seen:", style=style("caution")))
        return parts

    def action_copy(self) -> None:
        if self._last is None:
            return
        fixes = self._last.data.get("fixes") or ()
        text = "\n\n".join(fix_text(fix) for fix in fixes)
        if not text:
            self.notify("this finding has no fix to copy", severity="warning")
            return
        self.app.copy_to_clipboard(text + "\n")
        self.notify(f"copied {len(fixes)} fix(es), {text.count(chr(10)) + 1} lines, to the clipboard "
                    "(OSC 52: your terminal must allow it)", timeout=3)

    def action_step(self, step: int) -> None:
        model = getattr(self.app, "model", None)
        if model is None or not model.findings:
            return
        keys = [f.key for f in model.findings]
        index = keys.index(self.key) if self.key in keys else -1
        self.key = keys[(index + step) % len(keys)]
        self._last = None
        self.show_model(model)
        self.query_one("#detail").scroll_home(animate=False)

