"""One CPU: its network softirq share over time, the latency histograms of its NET_RX and
NET_TX handlers, its NAPI polls, softnet counters and the NIC queue IRQs it takes."""
from __future__ import annotations

from typing import Any, Mapping

from rich.console import RenderableType
from rich.text import Text

from profiler.document import CpuView, ProfileDocument

from ..model import (
    queue_irq_affinities,
    NETWORK_SOFTIRQS, DashboardModel, format_ns, format_share, log2_buckets, sparkline,
)
from ..widgets.tables import severity_text
from .detail import DetailScreen, bar, data_table, kv_table, section

HISTOGRAM_BAR = 30
TREND_WIDTH = 60


def histogram_table(histogram: list[int], measure: str) -> RenderableType:
    buckets = log2_buckets(histogram)
    if not buckets:
        return Text("no samples", style="dim")
    peak = max(count for _, count in buckets)
    table = data_table((measure, False), ("count", True), ("", False))
    for label, count in buckets:
        table.add_row(label, str(count), bar(count, peak, HISTOGRAM_BAR))
    return table


def queue_irqs(node: Mapping[str, Any] | None, cpu: int) -> list[tuple[str, str, bool]]:
    """(queue, its affinity, pinned to this CPU alone) for every NIC queue IRQ allowed here."""
    return [(f"{nic.get('name')} {queue.get('kind')}-{queue.get('index')} (IRQ {queue['irq']})", text, cpus == {cpu})
            for nic, queue, text, cpus in queue_irq_affinities(node) if cpu in cpus]


def render_cpu(model: DashboardModel, number: int) -> list[RenderableType]:
    row = model.cpu(number)
    cpu = ProfileDocument(model.document).cpu(number)
    title = Text()
    title.append(" CPU ", style="reverse bold")
    title.append(f"  {number}", style="bold")
    parts: list[RenderableType] = [title]
    findings = [f for f in model.findings if f.data.get("cpu") == number]
    if findings:
        parts.append(section("Findings"))
        for finding in findings:
            line = Text.assemble(severity_text(finding.severity), f" {finding.summary}")
            parts.append(line)

    live = model.header.mode == "live"
    parts.append(section("Now (share of the CPU's time, last interval)" if live else "Share of the CPU's time"))
    now = kv_table()
    if row is not None and not row.detail_measured:
        now.add_row("NET_RX softirq", "not measured: the quiet detail tier parks the softirq programs")
    elif row is not None:
        now.add_row("NET_RX softirq", format_share(row.net_rx_share))
        now.add_row("NET_TX softirq", format_share(row.net_tx_share))
        if row.net_rx_trend:
            now.add_row("NET_RX trend", sparkline(row.net_rx_trend, min(TREND_WIDTH, len(row.net_rx_trend)), top=1.0))
    parts.append(now)
    if cpu is None:
        parts.append(Text("\nno softirq data for this CPU in the capture", style="dim"))
        return parts

    span = f"last {model.header.window_s:.0f}s" if live else "capture"
    if cpu.detail_ran:
        parts.extend(_softirq_and_napi(cpu, span))
    else:
        parts.append(section(f"softirq run time and NAPI polls ({span}): not measured"))
        parts.append(Text("the quiet detail tier parks those programs until it sees trouble", style="dim"))

    softnet = {k: v for k, v in cpu.softnet.items() if v}
    drops = {k: v for k, v in cpu.drops.items() if v}
    if softnet or drops:
        parts.append(section(f"softnet and drops on this CPU ({span})"))
        table = kv_table()
        for key, value in softnet.items():
            table.add_row(f"softnet {key}", str(value))
        for key, value in drops.items():
            table.add_row(f"drop {key}", str(value))
        parts.append(table)

    irqs = queue_irqs(model.document.get("node"), number)
    parts.append(section("NIC queue IRQs that may run here"))
    if irqs:
        table = data_table(("queue", False), ("effective affinity", False), ("", False))
        for label, affinity, alone in irqs:
            table.add_row(label, affinity, "pinned here" if alone else "shared")
        parts.append(table)
    else:
        parts.append(Text("none", style="dim"))
    return parts


class CpuScreen(DetailScreen):
    def __init__(self, cpu: int):
        super().__init__()
        self.cpu = cpu

    def render_body(self, model: DashboardModel) -> list[RenderableType]:
        return render_cpu(model, self.cpu)


def _softirq_and_napi(cpu: CpuView, span: str) -> list[RenderableType]:
    """The CPU's softirq run-time (and queue-delay) histograms and its NAPI polls."""
    parts: list[RenderableType] = []
    for vector in NETWORK_SOFTIRQS:
        count = cpu.softirq_count(vector)
        if not count:
            parts.append(section(f"{vector} ({span}): no runs"))
            continue
        time_ns = cpu.softirq_time_ns(vector)
        latency = cpu.latency_log2_ns(vector)
        p50, p99 = cpu.latency_percentiles_ns(vector, (0.5, 0.99))
        head = (f"{vector} ({span}): {count} runs, {format_ns(time_ns)} in total "
                f"({format_share(cpu.softirq_share(vector))} of the CPU), "
                f"mean {format_ns(time_ns / count)}")
        if p50 is not None and p99 is not None:
            head += f", p50 {format_ns(p50)}, p99 {format_ns(p99)}"
        parts.append(section(head))
        parts.append(Text("handler run time (softirq entry → exit), log2 buckets", style="dim"))
        parts.append(histogram_table(latency, "run time"))
        delay = cpu.queue_delay_log2_ns(vector)
        if any(delay):
            every = cpu.queue_delay_sample_every(vector)
            sampled = f", measured on 1 run in {every}" if every > 1 else ""
            parts.append(Text(f"raise → entry delay (time the work waited to run){sampled}", style="dim"))
            parts.append(histogram_table(delay, "waited"))

    napi = cpu.napi
    parts.append(section(f"NAPI polls ({span})"))
    if napi:
        table = data_table(("device", False), ("polls", True), ("packets", True), ("budget used up", True))
        for device in napi:
            polls = int(device.get("polls", 0))
            exhausted = int(device.get("budget_exhausted", 0))
            share = f" ({100 * exhausted / polls:.0f}%)" if polls else ""
            table.add_row(str(device.get("device")), str(polls), str(device.get("packets", 0)), f"{exhausted}{share}")
        parts.append(table)
    else:
        parts.append(Text("none", style="dim"))
    return parts
