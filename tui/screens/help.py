"""`?`: the key map. docs/tui.md carries the same table (a test keeps them in step)."""
from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

# Quit and help first: on an 80×24 terminal the bottom of the list may need scrolling, and
# the way out must never be below the fold.
KEYMAP: tuple[tuple[str, str], ...] = (
    ("q", "quit (Ctrl-C too)"),
    ("?", "this help (Esc closes it)"),
    ("Tab", "next panel: findings, pods, CPUs (Shift+Tab: back)"),
    ("↑ ↓ PgUp PgDn", "move in a table; scroll a detail view"),
    ("Enter", "open the selected finding, pod or CPU"),
    ("Esc", "back from a detail view; clear the pod filter"),
    ("p / Space", "pause or resume the display (sampling goes on)"),
    ("s / S", "sort pods by the next column / reverse the order"),
    ("/", "filter pods by name (Enter keeps it, Esc clears it)"),
    ("v", "switch between pods and CPUs (wide: move between them)"),
    ("1 / 2 / 3", "go to findings / pods / CPUs"),
    ("i", "probes: attached, not attached and why; netprof's cost"),
    ("n / N", "in a finding: next / previous finding"),
    ("y", "in a finding: copy its fixes (commands, YAML) via OSC 52"),
    ("e", "export the capture (the same files as `profile --output`)"),
    ("b / B", "mark the screen as the baseline / forget it"),
    ("d", "show pods and CPUs as the change since the baseline (again: as now)"),
)

LEGEND = (
    ("‼ ! i", "beside a pod or CPU: its worst finding is CRIT / WARN / INFO"),
    ("·", "zero"),
    ("▁▂▃▄▅▆▇█", "one bar per interval, newest right (CPU: 0–100% of its time)"),
)


def keymap_table() -> Table:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold", no_wrap=True)
    table.add_column()
    for key, what in KEYMAP:
        table.add_row(key, what)
    table.add_row("", "")
    for key, what in LEGEND:
        table.add_row(Text(key, style="bold"), what)
    return table


class HelpScreen(ModalScreen):
    BINDINGS = [Binding("escape,question_mark,q", "dismiss", "close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help"):
            yield Static(keymap_table())

    def on_mount(self) -> None:
        help_box = self.query_one("#help")
        help_box.border_title = "netprof keys"
        help_box.border_subtitle = "Esc closes"
