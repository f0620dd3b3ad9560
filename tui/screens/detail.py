"""A full-screen detail view: a title line, a scrollable body rebuilt from each new model,
Esc to go back."""
from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Footer, Static

from ..model import DashboardModel
from ..widgets.header import HeaderLine
from .base import ModelScreen


def section(title: str) -> Text:
    return Text(f"\n{title}", style="bold underline")


class TextTable(Table):
    """A rich Table whose str cells are text, never markup: cells show pod names, drop sites,
    devices and evidence from captures, and a pod named "[red]x" must show as that name.
    (Textual renders without highlighting, so a Text cell looks exactly like the str did.)"""

    def add_row(self, *renderables, **kwargs) -> None:
        super().add_row(*(Text(cell) if isinstance(cell, str) else cell for cell in renderables), **kwargs)


def kv_table() -> Table:
    table = TextTable.grid(padding=(0, 2))
    table.add_column(style="dim", no_wrap=True)
    table.add_column(overflow="fold")
    return table


def data_table(*columns: tuple[str, bool]) -> Table:
    """A plain table: (header, right-aligned) per column."""
    table = TextTable(show_edge=False, pad_edge=False, box=None, header_style="bold", expand=False)
    for index, (header, right) in enumerate(columns):
        last = index == len(columns) - 1
        # Only the last column wraps: a wrapped number or address is misread.
        table.add_column(header, justify="right" if right else "left", no_wrap=not last,
                         overflow="fold" if last else "ellipsis")
    return table


def bar(value: float, peak: float, width: int) -> str:
    """A horizontal bar in eighths of a cell, for histograms and queue fills."""
    if peak <= 0 or value <= 0:
        return ""
    eighths = max(1, round(value / peak * width * 8))
    full, part = divmod(eighths, 8)
    return "█" * full + (" ▏▎▍▌▋▊▉"[part] if part else "")


class DetailScreen(ModelScreen):
    BINDINGS = [
        Binding("escape,backspace", "back", "back"),
        Binding("p,space", "pause", "pause"),
    ]

    def compose(self) -> ComposeResult:
        yield HeaderLine(id="header")
        with VerticalScroll(id="detail"):
            yield Static(id="body")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#detail", VerticalScroll).focus()

    def show_model(self, model: DashboardModel) -> None:
        header = self.query_one("#header", HeaderLine)
        header.info = model.header
        header.paused = getattr(self.app, "paused", False)
        self.query_one("#body", Static).update(Group(*self.render_body(model)))

    def render_body(self, model: DashboardModel) -> list[RenderableType]:
        raise NotImplementedError

    def set_paused(self, paused: bool) -> None:
        self.query_one("#header", HeaderLine).paused = paused

    def set_stale(self, stale_s: float | None) -> None:
        self.query_one("#header", HeaderLine).stale_s = stale_s

    def action_back(self) -> None:
        self.app.pop_screen()

    def action_pause(self) -> None:
        self.app.toggle_pause()
