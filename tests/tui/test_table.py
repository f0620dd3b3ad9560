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


def test_one_changed_cell_repaints_its_row_only(monkeypatch):
    """Textual's update_cell repaints the whole table: every line through the styling again."""
    painted: list[int] = []
    original = DataTable.render_line

    def counting(self, y):
        painted.append(y)
        return original(self, y)

    monkeypatch.setattr(DataTable, "render_line", counting)

    class Screenful(App):
        def compose(self) -> ComposeResult:
            yield Pods()

    async def run() -> None:
        app = Screenful()
        async with app.run_test(size=(40, 20)) as pilot:
            table = app.query_one(Pods)
            table.show_rows(rows("5"))
            await pilot.pause()
            assert len(painted) >= 12              # the header and 11 rows, the first time
            painted.clear()
            table.show_rows(rows("7"))             # web's drops changed, nothing else
            await pilot.pause()
            web_line = table.get_row_index("web") + 1  # under the header
            assert painted and set(painted) == {web_line}, painted
            assert "7" in table.get_row("web")[1].plain
            # The row still repaints where it is after a reorder.
            painted.clear()
            reordered = rows("9")
            table.show_rows([reordered[-1]] + reordered[:-1])
            await pilot.pause()
            assert table.get_row_index("web") == 0 and "9" in table.get_row("web")[1].plain
            assert 1 in painted, painted

    asyncio.run(run())
