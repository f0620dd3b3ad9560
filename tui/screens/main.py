"""The dashboard: header, findings, and pods or CPUs (both side by side on a wide terminal)."""
from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Input

from ..model import BaselineView, DashboardModel
from ..widgets.header import HeaderLine
from ..widgets.tables import CpusTable, FindingsTable, PodsTable
from .base import ModelScreen

# From this width on, pods and CPUs are shown side by side instead of one at a time.
WIDE_COLUMNS = 150


class MainScreen(ModelScreen):
    BINDINGS = [
        Binding("p,space", "pause", "pause"),
        Binding("s", "sort", "sort"),
        Binding("S", "reverse_sort", "reverse sort", show=False),
        Binding("slash", "filter", "filter"),
        Binding("v", "switch_view", "pods/CPUs"),
        Binding("1", "focus('findings')", "findings", show=False),
        Binding("2", "focus('pods')", "pods", show=False),
        Binding("3", "focus('cpus')", "CPUs", show=False),
        Binding("i", "probes", "probes", show=False),
        Binding("b", "mark_baseline", "baseline", show=False),
        Binding("B", "clear_baseline", "clear baseline", show=False),
        Binding("d", "toggle_deltas", "deltas", show=False),
        Binding("escape", "clear_filter", "clear filter", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.view = "pods"  # which of pods/CPUs a narrow terminal shows
        self.model: DashboardModel | None = None
        self._titles: dict[str | None, tuple[str, str]] = {}  # table id → its border's texts now

    def compose(self) -> ComposeResult:
        yield HeaderLine(id="header")
        yield FindingsTable(id="findings")
        with Horizontal(id="tables"):
            yield PodsTable(id="pods")
            yield CpusTable(id="cpus")
        yield Input(placeholder="filter pods by name (Enter keeps it, Esc clears)", id="filter")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#filter", Input).display = False
        self._apply_view()
        self.query_one("#findings", FindingsTable).focus()
        self._retitle()

    def on_resize(self) -> None:
        self._apply_view()
        self._retitle()

    @property
    def wide(self) -> bool:
        return self.size.width >= WIDE_COLUMNS

    def _apply_view(self) -> None:
        pods = self.query_one("#pods", PodsTable)
        cpus = self.query_one("#cpus", CpusTable)
        pods.display = self.wide or self.view == "pods"
        cpus.display = self.wide or self.view == "cpus"
        self.set_class(self.wide, "wide")

    # ---- the model

    def show_model(self, model: DashboardModel) -> None:
        self.model = model
        baseline: BaselineView | None = getattr(self.app, "baseline", None)
        header = self.query_one("#header", HeaderLine)
        header.info = model.header
        header.baseline = baseline
        self.query_one("#findings", FindingsTable).show_findings(model.findings)
        pods = self.query_one("#pods", PodsTable)
        cpus = self.query_one("#cpus", CpusTable)
        pods.baseline = cpus.baseline = baseline
        pods.show(model.pods)
        cpus.show(model.cpus)
        self._retitle()

    def set_paused(self, paused: bool) -> None:
        self.query_one("#header", HeaderLine).paused = paused

    def set_stale(self, stale_s: float | None) -> None:
        self.query_one("#header", HeaderLine).stale_s = stale_s

    def _retitle(self) -> None:
        model = self.model
        findings = self.query_one("#findings", FindingsTable)
        pods = self.query_one("#pods", PodsTable)
        cpus = self.query_one("#cpus", CpusTable)
        window = f"last {model.header.window_s:.0f}s" if model and model.header.mode == "live" else "capture"
        count = len(model.findings) if model else 0
        self._set_titles(findings, f"Findings ({count}, {window})", "Enter: evidence and fixes")
        total = len(model.pods) if model else 0
        shown = pods.row_count
        per = self._rate_span(model)
        title = f"Pods ({shown} of {total})" if pods.filter_text else f"Pods ({total})"
        if pods.showing_deltas:
            per = "Δ since baseline"
        self._set_titles(pods,
                         " · ".join(part for part in (title, f"per s {per}" if per else "",
                                                      f"sort {pods.pod_sort.label}") if part),
                         f"filter “{pods.filter_text}” · Esc clears" if pods.filter_text
                         else "s sort · / filter · v CPUs" if not self.wide else "s sort · / filter")
        cpu_count = len(model.cpus) if model else 0
        self._set_titles(cpus,
                         f"CPUs ({cpu_count}) · Δ since baseline" if cpus.showing_deltas
                         else f"CPUs ({cpu_count})" + (f" · softirq share {per}" if per else ""),
                         "v pods · Enter: latency histogram" if not self.wide else "Enter: latency histogram")

    def _set_titles(self, table: DataTable, title: str, subtitle: str) -> None:
        """Textual repaints a whole widget whenever its border title is assigned, even the
        same text: every line of the table through the styling again, each second."""
        if self._titles.get(table.id) != (title, subtitle):
            self._titles[table.id] = (title, subtitle)
            table.border_title = title
            table.border_subtitle = subtitle

    @staticmethod
    def _rate_span(model: DashboardModel | None) -> str:
        if model is None:
            return ""
        if model.header.mode == "live":
            return "now"
        return f"over {model.rate_window_s:.1f}s"

    # ---- keys

    def action_pause(self) -> None:
        self.app.toggle_pause()

    def action_mark_baseline(self) -> None:
        self.app.mark_baseline()

    def action_clear_baseline(self) -> None:
        self.app.clear_baseline()

    def action_toggle_deltas(self) -> None:
        if getattr(self.app, "baseline", None) is None:
            self.app.notify("no baseline yet: b marks one", severity="warning", timeout=3)
            return
        pods = self.query_one("#pods", PodsTable)
        cpus = self.query_one("#cpus", CpusTable)
        pods.deltas = cpus.deltas = not pods.deltas
        if self.model is not None:
            self.show_model(self.model)

    def _focused_table(self) -> DataTable | None:
        focused = self.focused
        return focused if isinstance(focused, DataTable) else None

    def action_sort(self) -> None:
        focused = self._focused_table()
        pods = self.query_one("#pods", PodsTable)
        if focused is not pods:
            self._show("pods")
        pods.cycle_sort()
        self._retitle()

    def action_reverse_sort(self) -> None:
        self.query_one("#pods", PodsTable).flip_sort()
        self._retitle()

    def action_filter(self) -> None:
        self._show("pods")
        box = self.query_one("#filter", Input)
        box.display = True
        box.value = self.query_one("#pods", PodsTable).filter_text
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "filter":
            self.query_one("#pods", PodsTable).set_filter(event.value)
            self._retitle()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "filter":
            event.input.display = False
            self.query_one("#pods", PodsTable).focus()

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        pods = self.query_one("#pods", PodsTable)
        if not box.display and not pods.filter_text:
            return
        box.value = ""
        box.display = False
        pods.set_filter("")
        pods.focus()
        self._retitle()

    def action_switch_view(self) -> None:
        if self.wide:  # both are shown: move between them
            focused = self._focused_table()
            self._show("cpus" if focused is not None and focused.id == "pods" else "pods")
        else:
            self._show("cpus" if self.view == "pods" else "pods")

    def action_focus(self, which: str) -> None:
        if which == "findings":
            self.query_one("#findings", FindingsTable).focus()
        else:
            self._show(which)

    def _show(self, view: str) -> None:
        self.view = view
        self._apply_view()
        self.query_one(f"#{view}", DataTable).focus()
        self._retitle()

    def action_probes(self) -> None:
        from .probes import ProbesScreen

        self.app.push_screen(ProbesScreen())

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        key = event.row_key.value
        table = event.data_table.id
        if key is None or self.model is None:
            return
        if table == "findings" and key != FindingsTable.NONE_KEY:
            from .finding import FindingScreen

            self.app.push_screen(FindingScreen(key))
        elif table == "pods":
            from .pod import PodScreen

            self.app.push_screen(PodScreen(int(key)))
        elif table == "cpus":
            from .cpu import CpuScreen

            self.app.push_screen(CpuScreen(int(key)))
