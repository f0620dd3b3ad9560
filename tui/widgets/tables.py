"""The three tables of the main screen: findings, pods, CPUs. Each renders rows of the model
(tui/model.py) and nothing else."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from rich.text import Text

from ..model import (
    NOT_MEASURED, SEVERITY_LABEL, BaselineView, CpuRow, FindingRow, PodRow, format_delta, format_rate, format_share,
    format_share_delta, sparkline,
)
from ..style import style
from .table import Cell, ColumnSpec, LiveTable

# One character beside a pod or CPU that a finding names; readable without colour too.
SEVERITY_MARK = {"critical": "‼", "warning": "!", "info": "i"}
PADDING = 2  # DataTable pads each cell by one column on each side
SCROLLBAR = 1


def severity_text(severity: str) -> Text:
    return Text(SEVERITY_LABEL.get(severity, severity[:4].upper()), style=style(severity))


def marked_name(name: str, severity: str | None) -> Text:
    return Text.assemble((SEVERITY_MARK.get(severity or "", " "), style(severity or "")), " " + name)


def rate_cell(per_s: float, alarm: bool = False) -> Cell:
    return Cell(Text(format_rate(per_s), style="bold" if alarm and per_s > 0 else ""), per_s)


def not_measured_cell() -> Cell:
    """A figure the window did not measure (the quiet detail tier): sorts below any 0."""
    return Cell(Text(NOT_MEASURED, style="dim"), -1.0)


def delta_cell(now_per_s: float, before_per_s: float, alarm: bool = False) -> Cell:
    """Since the baseline: trouble that rose is bold (an alarm column), sorted by the change."""
    delta = now_per_s - before_per_s
    return Cell(Text(format_delta(delta), style="bold" if alarm and delta >= 0.05 else ""), delta)


class DeltaMode:
    """Tables that can show "now minus the baseline" instead of "now" (key `d`)."""

    baseline: BaselineView | None = None
    deltas: bool = False

    @property
    def showing_deltas(self) -> bool:
        return self.deltas and self.baseline is not None


def layout(width: int, fixed: list[ColumnSpec], flexible: list[tuple[ColumnSpec, int]],
           optional: list[ColumnSpec] = ()) -> tuple[ColumnSpec, ...]:
    """Columns that fit in `width`: fixed ones; flexible ones at least at their width, sharing
    what is left in proportion to their width up to their cap; optional ones only when
    there is room for them after the flexible ones' minimum."""
    available = width - SCROLLBAR
    used = sum(spec.width + PADDING for spec in fixed) + sum(spec.width + PADDING for spec, _ in flexible)
    chosen_optional = []
    for spec in optional:
        if used + spec.width + PADDING <= available:
            chosen_optional.append(spec)
            used += spec.width + PADDING
    spare = max(0, available - used)
    widths = {spec.key: spec.width for spec, _ in flexible}
    growing = [(spec, cap) for spec, cap in flexible if cap > spec.width]
    while spare > 0 and growing:
        total = sum(spec.width for spec, _ in growing)
        share_out = spare
        for spec, cap in growing:
            extra = min(cap - widths[spec.key], max(1, share_out * spec.width // total), spare)
            widths[spec.key] += extra
            spare -= extra
        growing = [(spec, cap) for spec, cap in growing if widths[spec.key] < cap]
    grown = [ColumnSpec(spec.key, spec.label, widths[spec.key], spec.right) for spec, _ in flexible]
    return tuple(fixed) + tuple(grown) + tuple(chosen_optional)


def ordered(specs: tuple[ColumnSpec, ...], order: tuple[str, ...]) -> tuple[ColumnSpec, ...]:
    position = {key: index for index, key in enumerate(order)}
    return tuple(sorted(specs, key=lambda spec: position[spec.key]))


class FindingsTable(LiveTable):
    COLUMNS = ("severity", "where", "summary")
    NONE_KEY = "-"  # the row that says there is nothing to report

    def all_columns(self) -> tuple[str, ...]:
        return self.COLUMNS

    def columns_for(self, width: int) -> tuple[ColumnSpec, ...]:
        specs = layout(width, [ColumnSpec("severity", "sev", 4)],
                       [(ColumnSpec("where", "where", 14), max(14, min(30, width // 5))),
                        (ColumnSpec("summary", "what", 20), 400)])
        return ordered(specs, self.COLUMNS)

    def show_findings(self, findings: tuple[FindingRow, ...]) -> None:
        if not findings:
            self.show_rows([(self.NONE_KEY, [Cell(Text("ok", style=style("ok"))), Cell("node"),
                                             Cell("no findings: nothing on this node stands out")])])
            return
        self.show_rows([
            (f.key, [Cell(severity_text(f.severity)), Cell(f.where), Cell(f.summary)])
            for f in findings
        ])


@dataclass(frozen=True)
class SortOrder:
    key: str
    label: str
    value: Callable[[PodRow], object]
    descending: bool = True


# Severity first: a pod a critical finding names outranks one with more events/s of a benign
# kind (QUEUE_PURGE at close is counted as a drop too); within a severity, events/s.
_SEVERITY_WEIGHT = {"critical": 3, "warning": 2, "info": 1}


def trouble_order(pod: PodRow) -> tuple[int, float]:
    return (_SEVERITY_WEIGHT.get(pod.worst_severity or "", 0), pod.rates.trouble_per_s)


POD_SORTS = (
    SortOrder("trouble", "trouble/s", trouble_order),
    SortOrder("retrans", "retrans/s", lambda p: p.rates.retransmits_per_s),
    SortOrder("drops", "drops/s", lambda p: p.rates.drops_per_s),
    SortOrder("listen", "listen ovf/s", lambda p: p.rates.listen_overflows_per_s),
    SortOrder("conntrack", "conntrack/s", lambda p: p.rates.conntrack_failures_per_s),
    SortOrder("name", "name", lambda p: p.name, descending=False),
)


def sort_pods(pods: tuple[PodRow, ...], order: SortOrder, reverse: bool) -> list[PodRow]:
    # Ties (most pods are quiet) break by name, so rows do not shuffle from one second to the next.
    by_name = sorted(pods, key=lambda p: (p.name, p.netns))
    descending = order.descending != reverse
    return sorted(by_name, key=order.value, reverse=descending)


def filter_pods(pods: tuple[PodRow, ...], text: str) -> tuple[PodRow, ...]:
    needle = text.strip().lower()
    return tuple(p for p in pods if needle in p.name.lower()) if needle else pods


def top_reasons(pod: PodRow, count: int = 2) -> Text:
    text = Text()
    for index, (reason, per_s) in enumerate(pod.rates.top_drops[:count]):
        if index:
            text.append(", ")
        text.append(reason)
        text.append(f" {format_rate(per_s)}", style="dim")
    more = len(pod.rates.top_drops) - count
    if more > 0:
        text.append(f" +{more}", style="dim")
    return text


class PodsTable(DeltaMode, LiveTable):
    COLUMNS = ("name", "retrans", "drops", "reasons", "listen", "conntrack", "trend")
    LABELS = {"name": "pod", "retrans": "retr/s", "drops": "drop/s", "reasons": "top drop reasons",
              "listen": "lstn/s", "conntrack": "ct/s", "trend": "trend"}
    SORT_COLUMN = {"retrans": "retrans", "drops": "drops", "listen": "listen", "conntrack": "conntrack",
                   "name": "name", "trouble": "trend"}

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.sort_index = 0
        self.reverse = False
        self.filter_text = ""
        self._pods: tuple[PodRow, ...] = ()

    @property
    def pod_sort(self) -> SortOrder:
        return POD_SORTS[self.sort_index]

    def all_columns(self) -> tuple[str, ...]:
        return self.COLUMNS

    def columns_for(self, width: int) -> tuple[ColumnSpec, ...]:
        label = self.LABELS
        specs = layout(
            width,
            [ColumnSpec("retrans", label["retrans"], 6, True), ColumnSpec("drops", label["drops"], 6, True),
             ColumnSpec("listen", label["listen"], 6, True), ColumnSpec("conntrack", label["conntrack"], 5, True)],
            [(ColumnSpec("name", label["name"], 20), 40), (ColumnSpec("reasons", label["reasons"], 16), 48),
             ],
            [ColumnSpec("trend", label["trend"], 12)],
        )
        return ordered(specs, self.COLUMNS)

    def relayout(self) -> None:
        super().relayout()
        self._label_sort()

    def _label_sort(self) -> None:
        labels = dict(self.LABELS)
        column = self.SORT_COLUMN[self.pod_sort.key]
        descending = self.pod_sort.descending != self.reverse
        labels[column] = labels[column] + ("▼" if descending else "▲")
        self.set_labels(labels)

    def cycle_sort(self) -> SortOrder:
        self.sort_index = (self.sort_index + 1) % len(POD_SORTS)
        self.reverse = False
        self._label_sort()
        self.show(self._pods)
        return self.pod_sort

    def flip_sort(self) -> None:
        self.reverse = not self.reverse
        self._label_sort()
        self.show(self._pods)

    def set_filter(self, text: str) -> None:
        self.filter_text = text
        self.show(self._pods)

    def show(self, pods: tuple[PodRow, ...]) -> None:
        self._pods = pods
        rows = []
        for pod in sort_pods(filter_pods(pods, self.filter_text), self.pod_sort, self.reverse):
            rates = pod.rates
            if self.showing_deltas:
                before = self.baseline.pod(pod.netns)
                numbers = [delta_cell(rates.retransmits_per_s, before.retransmits_per_s, True),
                           delta_cell(rates.drops_per_s, before.drops_per_s, True),
                           delta_cell(rates.listen_overflows_per_s, before.listen_overflows_per_s, True),
                           delta_cell(rates.conntrack_failures_per_s, before.conntrack_failures_per_s, True)]
            else:
                numbers = [rate_cell(rates.retransmits_per_s, True), rate_cell(rates.drops_per_s, True),
                           rate_cell(rates.listen_overflows_per_s, True),
                           rate_cell(rates.conntrack_failures_per_s, True)]
            rows.append((pod.key, [
                Cell(marked_name(pod.name, pod.worst_severity), pod.name),
                numbers[0],
                numbers[1],
                Cell(top_reasons(pod)),
                numbers[2],
                numbers[3],
                Cell(sort=rates.trouble_per_s, draw=lambda width, trend=pod.trend: sparkline(trend, width)),
            ]))
        self.show_rows(rows)


def share_picture(cpu: CpuRow, width: int) -> str:
    """The NET_RX share over the last intervals; with no history yet (a replay), the share
    itself as a bar, so an imbalance still shows at a glance."""
    if not cpu.detail_measured:
        return "quiet tier"[:width].ljust(width)
    if len(cpu.net_rx_trend) >= 2:
        return sparkline(cpu.net_rx_trend, width, top=1.0)
    filled = round(cpu.net_rx_share * width)
    return ("█" * filled).ljust(width, "·") if width > 0 else ""


class CpusTable(DeltaMode, LiveTable):
    COLUMNS = ("cpu", "net_rx", "trend", "net_tx", "budget", "squeeze", "backlog", "irqs")
    LABELS = {"cpu": "cpu", "net_rx": "NET_RX", "trend": "RX trend", "net_tx": "NET_TX",
              "budget": "budget/s", "squeeze": "sqz/s", "backlog": "bklog/s", "irqs": "NIC queue IRQs"}

    def all_columns(self) -> tuple[str, ...]:
        return self.COLUMNS

    def columns_for(self, width: int) -> tuple[ColumnSpec, ...]:
        label = self.LABELS
        specs = layout(
            width,
            [ColumnSpec("cpu", label["cpu"], 3, True), ColumnSpec("net_rx", label["net_rx"], 6, True),
             ColumnSpec("net_tx", label["net_tx"], 6, True),
             ColumnSpec("squeeze", label["squeeze"], 5, True), ColumnSpec("backlog", label["backlog"], 7, True)],
            [(ColumnSpec("trend", label["trend"], 10), 30), (ColumnSpec("irqs", label["irqs"], 14), 60)],
            [ColumnSpec("budget", label["budget"], 8, True)],
        )
        return ordered(specs, self.COLUMNS)

    def show(self, cpus: tuple[CpuRow, ...]) -> None:
        rows = []
        for cpu in cpus:
            heavy = cpu.net_rx_share + cpu.net_tx_share >= 0.5
            if self.showing_deltas:
                before = self.baseline.cpu(cpu.cpu)
                rx = cpu.net_rx_share - before.net_rx_share
                shares = [Cell(Text(format_share_delta(rx), style="bold" if rx >= 0.005 else ""), rx),
                          Cell(format_share_delta(cpu.net_tx_share - before.net_tx_share),
                               cpu.net_tx_share - before.net_tx_share)]
                numbers = [delta_cell(cpu.budget_exhausted_per_s, before.budget_exhausted_per_s),
                           delta_cell(cpu.time_squeeze_per_s, before.time_squeeze_per_s, True),
                           delta_cell(cpu.backlog_drops_per_s, before.backlog_drops_per_s, True)]
            elif not cpu.detail_measured:
                # The quiet tier parked the softirq and NAPI programs: unknown is not 0%.
                shares = [not_measured_cell(), not_measured_cell()]
                numbers = [not_measured_cell(), rate_cell(cpu.time_squeeze_per_s, True),
                           rate_cell(cpu.backlog_drops_per_s, True)]
            else:
                shares = [Cell(Text(format_share(cpu.net_rx_share), style="bold" if heavy else ""), cpu.net_rx_share),
                          Cell(format_share(cpu.net_tx_share), cpu.net_tx_share)]
                numbers = [rate_cell(cpu.budget_exhausted_per_s), rate_cell(cpu.time_squeeze_per_s, True),
                           rate_cell(cpu.backlog_drops_per_s, True)]
            rows.append((cpu.key, [
                Cell(marked_name(str(cpu.cpu), cpu.worst_severity), cpu.cpu),
                shares[0],
                Cell(draw=lambda width, cpu=cpu: share_picture(cpu, width)),
                shares[1],
                *numbers,
                Cell(", ".join(irq.short for irq in cpu.irqs) if cpu.irqs else "·"),
            ]))
        self.show_rows(rows)
