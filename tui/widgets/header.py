"""The header line: what is being watched, how, and whether the picture is current."""
from __future__ import annotations

import time

from rich.text import Text
from textual.reactive import reactive
from textual.widget import Widget

from ..model import BaselineView, HeaderInfo, format_rate
from ..style import style


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s" if seconds >= 10 else f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def baseline_segment(baseline: BaselineView) -> Text:
    """Since the baseline, in `netprof diff`'s terms: how many figures moved beyond noise."""
    when = time.strftime("%H:%M:%S", time.localtime(baseline.marked_at))
    text = Text(f"Δ {baseline.reason} {when}: ", style="bold")
    if not baseline.worse and not baseline.better:
        text.append("no change beyond noise", style=style("ok"))
        return text
    if baseline.worse:
        text.append(f"{baseline.worse} worse", style=style("alarm"))
    if baseline.better:
        text.append((", " if baseline.worse else "") + f"{baseline.better} better", style=style("ok"))
    return text


def tier_segment(info: HeaderInfo) -> Text | None:
    """The detail tier, when it is not the pinned full tier (which shows everything, as
    always): quiet, or full because of trouble (since when, and why)."""
    if info.tier_mode == "full" and info.tier == "full":
        return None
    if info.tier == "quiet":
        return Text(f"tier quiet ({info.tier_mode}): no softirq/NAPI/stacks", style="dim")
    text = Text(f"tier full ({info.tier_mode})", style=style("caution"))
    if info.tier_switched_at is not None:
        text.append(" since " + time.strftime("%H:%M:%S", time.localtime(info.tier_switched_at)))
    if info.tier_why:
        text.append(f": {info.tier_why}", style="dim")
    return text


def header_segments(info: HeaderInfo | None, paused: bool, stale_s: float | None,
                    baseline: BaselineView | None = None) -> list[tuple[int, Text]]:
    """(priority, text) in display order; a narrow terminal keeps the lowest priorities."""
    segments: list[tuple[int, Text]] = []
    if info is None:
        segments.append((0, Text(" LIVE ", style="reverse bold")))
        segments.append((1, Text("attaching… waiting for the first sample")))
        return segments
    badge = "PAUSED" if paused else info.mode.upper()
    segments.append((0, Text(f" {badge} ", style="reverse bold")))
    if info.error:
        segments.append((1, Text(info.error, style=style("alarm"))))
    if stale_s is not None:
        segments.append((1, Text(f"no new sample for {_duration(stale_s)}", style=style("alarm"))))
    segments.append((2, Text(info.node, style="bold")))
    if baseline is not None:
        segments.append((2, baseline_segment(baseline)))
    segments.append((6, Text(f"kernel {info.kernel}")))
    probes = Text(f"probes {info.probes_attached}/{info.probes_total}")
    if info.probes_missing:
        probes.stylize(style("caution"))
        probes.append(" [i]", style="dim")
    segments.append((3, probes))
    tier = tier_segment(info)
    if tier is not None:
        segments.append((3, tier))
    if info.mode == "live" and info.interval_s:
        segments.append((5, Text(f"every {info.interval_s:g}s")))
    segments.append((4, Text(f"{format_rate(info.events_per_s)} ev/s")))
    if info.mode == "live":
        segments.append((7, Text(f"window {_duration(info.window_s)}")))
    else:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.started_at)) if info.started_at else "?"
        segments.append((5, Text(f"{_duration(info.window_s)} captured")))
        segments.append((7, Text(f"at {when}")))
    if info.cost:
        segments.append((8, Text(f"cost {info.cost}")))
    return segments


def fit_segments(segments: list[tuple[int, Text]], width: int, separator: str = "  ") -> Text:
    keep: set[int] = set()
    used = 0
    for index in sorted(range(len(segments)), key=lambda i: (segments[i][0], i)):
        extra = segments[index][1].cell_len + (len(separator) if keep else 0)
        if used + extra > width:
            continue
        keep.add(index)
        used += extra
    line = Text(no_wrap=True, overflow="ellipsis")
    for index, (_, text) in enumerate(segments):
        if index in keep:
            if len(line):
                line.append(separator)
            line.append_text(text)
    return line


class HeaderLine(Widget):
    DEFAULT_CSS = """
    HeaderLine { height: 1; width: 1fr; }
    """

    info: reactive[HeaderInfo | None] = reactive(None)
    paused: reactive[bool] = reactive(False)
    stale_s: reactive[float | None] = reactive(None)
    baseline: reactive[BaselineView | None] = reactive(None)

    def render(self) -> Text:
        return fit_segments(header_segments(self.info, self.paused, self.stale_s, self.baseline), self.size.width)
