"""One pod: its rates now, what it retransmits, its listeners' queues against their limits,
its drops by reason with where in the kernel they happen, and the findings that name it."""
from __future__ import annotations

from typing import Any, Mapping

from rich.console import RenderableType
from rich.text import Text

from profiler.document import ProfileDocument

from ..model import (
    DashboardModel, format_rate, sparkline,
)
from ..style import style
from ..widgets.tables import severity_text
from .detail import DetailScreen, bar, data_table, kv_table, section

QUEUE_BAR = 10
TREND_WIDTH = 60


def render_pod(model: DashboardModel, netns: int) -> list[RenderableType]:
    row = model.pod(netns)
    document = ProfileDocument(model.document)
    pod = document.pod(netns)
    name = row.name if row else pod.name if pod else f"netns:{netns}"
    title = Text()
    title.append(" POD ", style="reverse bold")
    title.append(f"  {name}", style="bold")
    title.append(f"  netns {netns}", style="dim")
    parts: list[RenderableType] = [title]
    if row is None and pod is None:
        parts.append(Text("\nThis pod is gone: its network namespace no longer exists.", style=style("caution")))
        return parts

    findings = [f for f in model.findings if f.data.get("pod") == name]
    if findings:
        parts.append(section("Findings"))
        for finding in findings:
            line = Text.assemble(severity_text(finding.severity), f" {finding.summary}")
            parts.append(line)

    live = model.header.mode == "live"
    parts.append(section("Now (per second, last interval)" if live else
                         f"Rates (per second over the capture's {model.rate_window_s:.1f}s)"))
    rates = kv_table()
    if row is not None:
        r = row.rates
        rates.add_row("retransmits", format_rate(r.retransmits_per_s))
        rates.add_row("drops", format_rate(r.drops_per_s))
        rates.add_row("listen overflows", format_rate(r.listen_overflows_per_s))
        rates.add_row("conntrack failures", format_rate(r.conntrack_failures_per_s))
        rates.add_row("receive queue full", format_rate(r.rcvqueue_full_per_s))
        if row.trend:
            rates.add_row("trouble/s trend", sparkline(row.trend, min(TREND_WIDTH, len(row.trend))))
    else:
        rates.add_row("", "quiet in the last interval")
    parts.append(rates)

    if pod is None:
        return parts
    span = f"last {model.header.window_s:.0f}s" if live else "capture"
    flows = document.flows_of(netns)
    parts.append(section(f"Flows that retransmit ({span})"))
    if flows:
        table = data_table(("source → destination", False), ("retransmits", True), ("segments", True),
                           ("TCP states", False))
        for flow in flows[:20]:
            states = ", ".join(f"{k} {v}" for k, v in sorted((flow.get("states") or {}).items(), key=lambda i: -i[1]))
            table.add_row(f"{flow['saddr']}:{flow['sport']} → {flow['daddr']}:{flow['dport']}",
                          str(flow.get("retransmits", 0)), str(flow.get("retransmitted_segments", 0)), states)
        parts.append(table)
        if len(flows) > 20:
            parts.append(Text(f"… and {len(flows) - 20} more (export for all)", style="dim"))
    else:
        parts.append(Text(f"none (retransmits in the {span}: {pod.retransmits})", style="dim"))

    listeners = pod.listeners
    parts.append(section(f"Listeners: accept queue vs limit ({span})"))
    if listeners:
        table = data_table(("listener", False), ("queue\npeak/limit", True), ("", False), ("backlog\nasked", True),
                           ("somaxconn", True), ("overflow\ndrops", True), ("samples\nfull", True))
        for listener in listeners:
            peak = listener.accept_queue_peak
            limit = listener.accept_queue_limit
            full = bool(limit) and peak >= limit
            asked = listener.requested_backlog
            somaxconn = listener.somaxconn
            fill = bar(min(peak, limit) if limit else peak, limit or peak or 1, QUEUE_BAR).ljust(QUEUE_BAR, "·")
            table.add_row(listener.label,
                          Text(f"{peak}/{limit}" + (" FULL" if full else ""), style=style("alarm") if full else ""),
                          Text(fill, style=style("alarm") if full else ""),
                          "?" if asked is None else str(asked), "?" if somaxconn is None else str(somaxconn),
                          str(listener.overflow_drops), str(listener.samples_full))
        parts.append(table)
        overflows = pod.listen_overflows
        if overflows:
            parts.append(Text(f"ListenOverflows in this pod's netns: {overflows}", style="bold"))
    else:
        parts.append(Text("no listening sockets seen", style="dim"))

    drops = {k: v for k, v in pod.drops.items() if v}
    parts.append(section(f"Drops by reason, and where the kernel dropped ({span})"))
    if drops:
        sites_by_reason: dict[str, list[Mapping[str, Any]]] = {}
        for site in document.drop_sites:
            sites_by_reason.setdefault(site.get("reason", ""), []).append(site)
        table = data_table(("reason", False), ("drops", True), ("kernel location (node-wide count)", False))
        for reason, count in sorted(drops.items(), key=lambda i: -i[1]):
            sites = sites_by_reason.get(reason, [])
            location = "; ".join(f"{s['symbol']} ({s['count']})" for s in sites[:3]) or "—"
            table.add_row(reason, str(count), location)
        parts.append(table)
        parts.append(Text("kernel locations come from skb:kfree_skb's location, counted for the whole node "
                          "by reason", style="dim"))
    else:
        parts.append(Text("none", style="dim"))

    conntrack = {k: v for k, v in pod.conntrack.items() if v}
    if conntrack:
        parts.append(section(f"Conntrack ({span}; *_now are levels)"))
        table = kv_table()
        for key, value in conntrack.items():
            table.add_row(key, str(value))
        parts.append(table)
        failures = pod.conntrack_failures
        if failures:
            parts.append(Text(f"refused: {failures}", style=style("alarm")))
    netstat = {k: v for k, v in pod.netstat.items() if v}
    if netstat:
        parts.append(section(f"Kernel counters in this netns ({span})"))
        table = kv_table()
        for key, value in sorted(netstat.items()):
            table.add_row(key, str(value))
        parts.append(table)
    return parts


class PodScreen(DetailScreen):
    def __init__(self, netns: int):
        super().__init__()
        self.netns = netns

    def render_body(self, model: DashboardModel) -> list[RenderableType]:
        return render_pod(model, self.netns)
