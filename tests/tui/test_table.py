"""LiveTable: a changed cell re-renders that cell, not the table."""
from __future__ import annotations

import asyncio

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


def test_one_changed_cell_renders_one_cell(monkeypatch):
    rendered: list[tuple[int, int]] = []
    original = DataTable._render_cell

    def counting(self, row_index, column_index, *args, **kwargs):
        rendered.append((row_index, column_index))
        return original(self, row_index, column_index, *args, **kwargs)

    monkeypatch.setattr(DataTable, "_render_cell", counting)

    class Screenful(App):
        def compose(self) -> ComposeResult:
            yield Pods()

    async def run() -> None:
        app = Screenful()
        async with app.run_test(size=(40, 20)) as pilot:
            table = app.query_one(Pods)
            table.show_rows(rows("5"))
            await pilot.pause()
            first = len(rendered)
            assert first >= 11 * 2                 # every cell, the first time
            rendered.clear()
            table.show_rows(rows("7"))             # web's drops changed, nothing else
            await pilot.pause()
            web = table.get_row_index("web")
            assert rendered and set(rendered) <= {(web, 1)}, rendered
            assert "7" in table.get_row("web")[1].plain

    asyncio.run(run())
