"""LiveTable: a changed cell re-renders that cell, not the table."""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from textual.app import App, ComposeResult
from textual.widgets import DataTable

from tui.widgets.table import Cell, ColumnSpec, LiveTable


class Pods(LiveTable):
    def columns_for(self, width: int) -> tuple[ColumnSpec, ...]:
        return (ColumnSpec("pod", "pod", 12), ColumnSpec("drops", "drops/s", 8, right=True))

    def all_columns(self) -> tuple[str, ...]:
        return ("pod", "drops")


def rows(drops_of_web: str) -> list[tuple[str, list[Cell]]]:
    return [(f"pod-{i}", [Cell(f"pod-{i}"), Cell("0")]) for i in range(10)] + [("web", [Cell("web"), Cell(drops_of_web)])]


class Screenful(App):
    def compose(self) -> ComposeResult:
        yield Pods()


def record_calls(monkeypatch, method: str, what: Callable[..., object]) -> list:
    """What each call of DataTable.<method> was asked (what(*args)), in order."""
    calls: list = []
    original = getattr(DataTable, method)

    def recording(self, *args, **kwargs):
        calls.append(what(*args))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(DataTable, method, recording)
    return calls


def after_one_changed_cell(calls: list, then: Callable[[Pods, list], Awaitable[None]] | None = None) -> tuple[int, int, list]:
    """Shows the rows, then again with web's drops changed and nothing else: (calls the first
    time, web's row index, calls the second time); `then(table, calls)` runs after, in the app."""
    seen: dict[str, object] = {}

    async def run() -> None:
        app = Screenful()
        async with app.run_test(size=(40, 20)) as pilot:
            table = app.query_one(Pods)
            table.show_rows(rows("5"))
            await pilot.pause()
            seen["first"] = len(calls)
            calls.clear()
            table.show_rows(rows("7"))
            await pilot.pause()
            assert "7" in table.get_row("web")[1].plain
            seen["web"], seen["second"] = table.get_row_index("web"), list(calls)
            if then is not None:
                calls.clear()
                await then(table, pilot)

    asyncio.run(run())
    return seen["first"], seen["web"], seen["second"]


def test_one_changed_cell_renders_one_cell(monkeypatch):
    rendered = record_calls(monkeypatch, "_render_cell", lambda row, column, *rest: (row, column))
    first, web, second = after_one_changed_cell(rendered)
    assert first >= 11 * 2                         # every cell, the first time
    assert second and set(second) <= {(web, 1)}, second


def test_one_changed_cell_repaints_its_row_only(monkeypatch):
    """Textual's update_cell repaints the whole table: every line through the styling again."""
    painted = record_calls(monkeypatch, "render_line", lambda y: y)

    async def reorder(table: Pods, pilot) -> None:
        # The row still repaints where it is after a reorder.
        reordered = rows("9")
        table.show_rows([reordered[-1]] + reordered[:-1])
        await pilot.pause()
        assert table.get_row_index("web") == 0 and "9" in table.get_row("web")[1].plain
        assert 1 in painted, painted

    first, web, second = after_one_changed_cell(painted, reorder)
    assert first >= 12                             # the header and 11 rows, the first time
    assert second and set(second) == {web + 1}, second  # web's line, under the header
