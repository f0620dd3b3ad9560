"""A DataTable that is updated in place: rows keyed by what they show (a pod's netns, a CPU,
a finding), cells rewritten only when their text changed, rows added and removed as things
come and go, the order applied with `sort` — never cleared and rebuilt, so nothing flickers
and the cursor stays on the row it was on."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from rich.text import Text
from textual.widgets import DataTable
from textual.widgets.data_table import ColumnKey, RowKey


class Cell:
    """A cell's text plus what it sorts by (the text of '4.2k' does not sort as a number).

    A cell whose look depends on its width (a sparkline, a bar) gives `draw(width) -> Text`
    instead, so a resize redraws it right away rather than cutting the old drawing."""

    __slots__ = ("text", "sort", "draw")

    def __init__(self, text: Text | str = "", sort: Any = None, draw: Callable[[int], Text | str] | None = None):
        self.text = text if isinstance(text, Text) else Text(text)
        self.sort = sort
        self.draw = draw

    def __rich__(self) -> Text:
        return self.text

    @property
    def plain(self) -> str:
        return self.text.plain


@dataclass(frozen=True)
class ColumnSpec:
    key: str
    label: str
    width: int
    right: bool = False   # numbers line up on the right


def fit(text: Text | str, width: int) -> Text:
    text = text.copy() if isinstance(text, Text) else Text(text)
    text.no_wrap = True
    if text.cell_len > width:
        text.truncate(width, overflow="ellipsis")
    return text


# Rendered cells kept by LiveTable: a screenful of a wide table is a few hundred.
CELL_CACHE_SIZE = 4096


class LiveTable(DataTable):
    """Subclasses say which columns exist for a width (`columns_for`) and give the rows."""

    DEFAULT_CSS = """
    LiveTable { height: 1fr; }
    """

    def __init__(self, **kwargs: Any):
        super().__init__(cursor_type="row", zebra_stripes=False, **kwargs)
        # Rendered cells by what they show (see _render_cell): DataTable's own cache is keyed
        # by a count of every update, so one changed cell re-rendered every cell of the table
        # through Rich, each second — half of the dashboard's CPU on a busy node.
        self._cells_by_content: dict[tuple, Any] = {}
        self._specs: tuple[ColumnSpec, ...] = ()
        self._shown: dict[str, tuple[str, ...]] = {}  # row key → the plain text of its cells
        self._rows: list[tuple[str, list[Cell]]] = []  # the last rows given, for a relayout
        self._order: list[str] = []

    # ---- what subclasses define

    def columns_for(self, width: int) -> tuple[ColumnSpec, ...]:
        raise NotImplementedError

    # ---- layout

    def on_resize(self) -> None:
        self.relayout()

    def relayout(self) -> None:
        """Columns for the current width; only when the set of widths changed (a resize)."""
        specs = self.columns_for(max(self.size.width, 20))
        if specs == self._specs:
            return
        self._specs = specs
        selected = self.selected_key
        self.clear(columns=True)
        self._shown.clear()
        for spec in specs:
            self.add_column(Text(spec.label, justify="right" if spec.right else "left"),
                            key=spec.key, width=spec.width)
        self._apply(self._rows, self._order, selected)

    def set_labels(self, labels: dict[str, str]) -> None:
        for spec in self._specs:
            if spec.key in labels and spec.key in self.columns:
                self.columns[spec.key].label = Text(labels[spec.key], justify="right" if spec.right else "left")
        self.refresh()

    # ---- rows

    @property
    def selected_key(self) -> str | None:
        if not self.row_count:
            return None
        try:
            row_key, _ = self.coordinate_to_cell_key(self.cursor_coordinate)
        except Exception:  # the cursor is past the last row while rows are being removed
            return None
        return row_key.value

    def show_rows(self, rows: list[tuple[str, list[Cell]]]) -> None:
        """Rows in display order: each (key, one Cell per column of `all_columns`)."""
        self._rows = rows
        self._order = [key for key, _ in rows]
        if not self._specs:
            self.relayout()
            return
        self._apply(rows, self._order, self.selected_key)

    def _apply(self, rows: list[tuple[str, list[Cell]]], order: list[str], selected: str | None) -> None:
        keys = {key for key, _ in rows}
        for gone in [key for key in self._shown if key not in keys]:
            self.remove_row(gone)
            del self._shown[gone]
        changed: list[str] = []
        for key, cells in rows:
            fitted = self._fit(key, cells)
            plain = tuple(cell.plain for cell in fitted)
            if key not in self._shown:
                self.add_row(*fitted, key=key)
            elif plain != self._shown[key]:
                # Written in place, not with update_cell: that repaints the whole table for
                # one cell, and every line of it goes through Textual's styling again each
                # second (the dashboard's largest cost after the cell cache).
                row = self._data[RowKey(key)]
                for spec, cell, old in zip(self._specs, fitted, self._shown[key]):
                    if cell.plain != old:
                        row[ColumnKey(spec.key)] = cell
                changed.append(key)
            self._shown[key] = plain
        if changed:
            self._update_count += 1  # DataTable's rendered lines are cached under this count
        current = [row.key.value for row in self.ordered_rows]
        if current != order:
            position = {key: index for index, key in enumerate(order)}
            first = self._specs[0].key
            self.sort(first, key=lambda cell: position.get(getattr(cell, "row_key", None), len(position)))
        # After the sort: a row repaints where it is now.
        for key in changed:
            self.refresh_row(self.get_row_index(key))
        if selected is not None and selected in self._shown:
            index = self.get_row_index(selected)
            if index != self.cursor_row:
                self.move_cursor(row=index, animate=False, scroll=False)

    def _fit(self, key: str, cells: list[Cell]) -> list[Cell]:
        """Cells for the columns shown (a narrow layout drops some), cut to their width; the
        first is tagged with the row key, which is what `sort` orders by."""
        by_key = dict(zip(self.all_columns(), cells))
        fitted: list[Cell] = []
        for spec in self._specs:
            cell = by_key.get(spec.key, Cell(""))
            text = fit(cell.draw(spec.width) if cell.draw else cell.text, spec.width)
            if spec.right:
                text.justify = "right"
            fitted.append(KeyedCell(text, cell.sort, key) if not fitted else Cell(text, cell.sort))
        return fitted

    def all_columns(self) -> tuple[str, ...]:
        """Every column a row carries a cell for, in order (a layout shows a subset)."""
        raise NotImplementedError

    # ---- rendering

    def _render_cell(self, row_index: int, column_index: int, base_style: Any, width: int,
                     cursor: bool = False, hover: bool = False) -> Any:
        """DataTable's rendering of one cell, reused while the cell shows the same object at
        the same place and in the same style. A changed cell is a new Cell object
        (`_apply` only writes the cells whose text changed), so the object itself is the
        content's key."""
        try:
            if row_index == -1:
                content = self.ordered_columns[column_index].label
            elif column_index == -1:
                content = None
            else:
                row_key = self._row_locations.get_key(row_index)
                content = self._data[row_key][self._column_locations.get_key(column_index)]
        except (KeyError, IndexError, AttributeError):
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        # By identity (a rich Text is unhashable); the entry keeps the object, and a hit
        # must be that very object, so a recycled id() never matches.
        key = (row_index, column_index, id(content), width, base_style, cursor, hover,
               self._show_hover_cursor, self._pseudo_class_state, self.show_cursor)
        cached = self._cells_by_content.get(key)
        if cached is not None and cached[0] is content:
            return cached[1]
        if len(self._cells_by_content) >= CELL_CACHE_SIZE:
            self._cells_by_content.clear()
        lines = super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        self._cells_by_content[key] = (content, lines)
        return lines



class KeyedCell(Cell):
    __slots__ = ("row_key",)

    def __init__(self, text: Text | str, sort: Any, row_key: str):
        super().__init__(text, sort)
        self.row_key = row_key
