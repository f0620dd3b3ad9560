"""`i`: every probe, attached or not, via what, and why not; and the capture's own cost."""
from __future__ import annotations

import time

from rich.console import Group, RenderableType
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from ..style import style
from .detail import TextTable


def render_probes(document: dict) -> RenderableType:
    table = TextTable(show_edge=False, pad_edge=False, box=None, header_style="bold")
    table.add_column("probe", no_wrap=True)
    table.add_column("")
    table.add_column("via / why not", overflow="fold")
    for probe in document.get("probes") or ():
        attached = bool(probe.get("attached"))
        table.add_row(str(probe.get("name")), Text("on" if attached else "OFF", style=style("ok") if attached else style("caution")),
                      str(probe.get("via")) if attached else f"{probe.get('via')}: {probe.get('error')}")
    parts: list[RenderableType] = [table]
    cost = document.get("cost")
    if isinstance(cost, dict) and cost:
        parts += render_cost(cost)
    lost = {k: v for k, v in (document.get("lost_events") or {}).items() if v}
    if lost:
        parts.append(Text("\nevents not counted (a kernel map was full, or the kernel skipped a program's run): "
                          + ", ".join(f"{k} {v}" for k, v in lost.items()), style=style("caution")))
    return Group(*parts)


def _number(value, unit: str = "", digits: int = 1) -> str:
    return "—" if not isinstance(value, (int, float)) else f"{value:,.{digits}f}{unit}"


def render_cost(cost: dict) -> list[RenderableType]:
    """The capture's `cost` section (profiler/cost.py): % are of one CPU, as `top` shows them."""
    parts: list[RenderableType] = [Text(
        f"\nwhat netprof costs (BPF timed over {_number(cost.get('timed_s'), 's')} of "
        f"{_number(cost.get('duration_s'), 's')}; % of one CPU)", style="bold")]
    table = TextTable(show_edge=False, pad_edge=False, box=None, header_style="bold")
    for header in ("BPF program", "events/s", "ns/event", "CPU"):
        table.add_column(header, justify="left" if header == "BPF program" else "right")
    for probe in cost.get("probes") or ():
        table.add_row(str(probe.get("hook") or probe.get("program")), _number(probe.get("events_per_s")),
                      _number(probe.get("ns_per_event")), _number(probe.get("cpu_percent"), "%", 2))
    bpf = cost.get("bpf") or {}
    if bpf:
        table.add_row(Text("all BPF", style="bold"), _number(bpf.get("events_per_s")),
                      _number(bpf.get("ns_per_event")), _number(bpf.get("cpu_percent"), "%", 2))
    parts.append(table)
    process = cost.get("process") or {}
    if process:
        rss = process.get("rss_bytes")
        parts.append(Text(f"netprof's process: {_number(process.get('cpu_percent'), '%')} CPU "
                          f"({_number(process.get('user_cpu_percent'), '%')} user), RSS "
                          f"{_number(rss / 2**20 if isinstance(rss, (int, float)) else None, ' MiB', 0)}"))
    return parts


class ProbesScreen(ModalScreen):
    BINDINGS = [Binding("escape,i,q", "dismiss", "close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="probes"):
            yield Static(id="probes-body")

    def on_mount(self) -> None:
        box = self.query_one("#probes")
        box.border_title = "probes"
        box.border_subtitle = "Esc closes"
        model = getattr(self.app, "model", None)
        parts: list[RenderableType] = [render_probes(dict(model.document)) if model is not None
                                       else Text("no capture yet")]
        feed = getattr(self.app, "feed", None)
        worker_cpu_s = getattr(feed, "worker_cpu_s", None)
        started_s = getattr(feed, "started_s", None)
        if worker_cpu_s is not None and started_s is not None:
            running_s = max(time.monotonic() - started_s, 1e-9)
            parts.append(Text(f"\nthis dashboard's sampling thread (map reads, analysis): "
                              f"{100 * worker_cpu_s / running_s:.1f}% of one CPU over {running_s:.0f}s"))
        self.query_one("#probes-body", Static).update(Group(*parts))
