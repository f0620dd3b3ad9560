"""The human report of a capture, rendered from its profile JSON (so a saved capture renders
the same as a live one). Sections without data are left out; a quiet node gives a short report.

A capture may come from anyone, and even a live one carries names netprof does not control
(pods, devices, the hostname): `render` makes the whole document inert first, and text from
it goes into tables as rich `Text`, never as a str (which rich would read as markup, so a pod
named "[red]x" would turn red instead of showing its name)."""
from __future__ import annotations

import sys

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from .document import CpuView, ProfileDocument
from .inert import inert_tree

MAX_FLOWS = 10
MAX_DROP_SITES = 10
QUIET_PODS_NAMED = 4
SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "cyan"}


def _rate(count: float, duration_s: float) -> str:
    return f"{count / duration_s:.1f}" if duration_s > 0 else "-"


def _table(title: str) -> Table:
    return Table(title=title, title_justify="left", show_edge=False, pad_edge=False)


def _top(mapping: dict[str, int], n: int = 2) -> Text:
    items = sorted(((k, v) for k, v in mapping.items() if v), key=lambda i: -i[1])
    text = ", ".join(f"{k} {v}" for k, v in items[:n])
    return Text(text + (f" +{len(items) - n}" if len(items) > n else ""))


def _header(capture: dict) -> Text:
    duration = float(capture.get("duration_s", 0.0))
    kernel = capture.get("kernel", {})
    head = Text()
    head.append("netprof profile", style="bold")
    node = capture.get("node") or {}
    if node.get("hostname"):
        head.append(f"  {node['hostname']}")
    head.append(f"  {duration:.1f}s on kernel {kernel.get('release', '?')}")
    head.append("  BTF" if kernel.get("btf") else "  no BTF")
    head.append("" if kernel.get("kprobes") else ", no kprobes")
    if capture.get("interrupted"):
        head.append("  (interrupted: partial capture)", style="yellow")
    tier = ProfileDocument(capture).tier
    if tier.mode != "full" or tier.quiet_s > 0:   # the pinned full tier is what a report always was
        head.append(f"\ndetail tier {tier.mode}: quiet {tier.quiet_s:.1f}s, full {tier.full_s:.1f}s "
                    "(softirq, NAPI and stacks cover the full seconds only)")
        last = tier.last_switch
        if last is not None:
            head.append(f"; {tier.switches_to_full + tier.switches_to_quiet} switch(es), last to "
                        f"{last.get('to')}: {last.get('why')}")
    return head


def _findings(capture: dict) -> Table | None:
    findings = capture.get("findings", [])
    if not findings:
        return None
    table = _table("Findings")
    table.add_column("severity", no_wrap=True)
    table.add_column("where", overflow="fold")
    table.add_column("what", overflow="fold")
    table.add_column("fix", overflow="fold")
    for finding in findings:
        where = finding.get("pod") or (f"CPU {finding['cpu']}" if finding.get("cpu") is not None else "node")
        fixes = finding.get("fixes", [])
        # Text, not a markup string: "[app]" would be taken for a style tag.
        fix = Text(f"[{fixes[0]['scope']}] {fixes[0]['title']}" if fixes else "")
        table.add_row(Text(finding["severity"], style=SEVERITY_STYLE.get(finding["severity"], "")),
                      Text(where), Text(finding["summary"]), fix)
    return table


def _probes(capture: dict) -> Text:
    """One line for what is attached, one per probe that is not, with why: the operator
    needs to know what this capture could not see, not to read a table of successes."""
    probes = capture.get("probes", [])
    attached = [p["name"] for p in probes if p["attached"]]
    text = Text()
    text.append(f"probes attached ({len(attached)}/{len(probes)}): ", style="bold")
    text.append(", ".join(attached) or "none")
    for probe in probes:
        if not probe["attached"]:
            text.append(f"\nnot attached: {probe['name']} ({probe['via']}): {probe['error']}", style="yellow")
    return text


def _pods(capture: dict) -> Table:
    document = ProfileDocument(capture)
    table = _table("Pods")
    table.add_column("pod", overflow="fold")
    table.add_column("retrans/s", justify="right")
    table.add_column("drops (top reasons)", overflow="fold")
    table.add_column("listen ovf", justify="right")
    table.add_column("conntrack", overflow="fold")
    quiet = []
    for pod in document.pods:
        conntrack = {k: v for k, v in pod.conntrack.items() if k in ("insert_failed", "drop", "early_drop") and v}
        overflows = pod.listen_overflows
        if not (pod.retransmits or pod.drops or overflows or conntrack):
            quiet.append(pod.name)
            continue
        table.add_row(
            Text(pod.name),
            _rate(pod.retransmits, document.duration_s) if pod.retransmits else "0",
            _top(pod.drops),
            str(overflows) if overflows else "",
            _top(conntrack, 3),
        )
    if quiet:
        # The JSON lists every pod; the report names a few quiet ones and counts the rest.
        shown = ", ".join(sorted(quiet)[:QUIET_PODS_NAMED])
        more = f" and {len(quiet) - QUIET_PODS_NAMED} more" if len(quiet) > QUIET_PODS_NAMED else ""
        table.add_row(Text(f"quiet: {shown}{more}", style="dim"), "0", "", "", "")
    if not document.pods:
        table.add_row("(no pods seen)", "", "", "", "")
    return table


def _flows(capture: dict) -> Table | None:
    flows = ProfileDocument(capture).flows
    if not flows:
        return None
    table = _table(f"Top flows by retransmits (of {len(flows)})")
    table.add_column("pod", overflow="fold")
    table.add_column("source → destination", no_wrap=True)
    table.add_column("retransmits", justify="right")
    table.add_column("states", overflow="fold")
    for flow in flows[:MAX_FLOWS]:
        table.add_row(Text(flow["pod"]), Text(f"{flow['saddr']}:{flow['sport']} → {flow['daddr']}:{flow['dport']}"),
                      str(flow["retransmits"]), _top(flow.get("states", {}), 2))
    return table


def _listeners(capture: dict) -> Table | None:
    rows = [(pod, listener) for pod, listener in ProfileDocument(capture).listeners() if listener.under_pressure]
    if not rows:
        return None
    table = _table("Listeners under pressure")
    table.add_column("pod", overflow="fold")
    table.add_column("listener", no_wrap=True)
    table.add_column("queue peak/limit", justify="right")
    table.add_column("backlog asked", justify="right")
    table.add_column("somaxconn", justify="right")
    table.add_column("overflow drops", justify="right")
    for pod, listener in rows:
        asked = listener.requested_backlog
        somaxconn = listener.somaxconn
        table.add_row(Text(pod.name), Text(listener.label),
                      f"{listener.accept_queue_peak}/{listener.accept_queue_limit}",
                      "?" if asked is None else str(asked), "?" if somaxconn is None else str(somaxconn),
                      str(listener.overflow_drops))
    return table


def _cpus(capture: dict) -> Table | None:
    document = ProfileDocument(capture)
    if not document.cpus:
        return None
    table = _table("CPUs")
    table.add_column("cpu", justify="right")
    table.add_column("NET_RX", justify="right")
    table.add_column("NET_RX µs\np50/90/99", justify="right", no_wrap=True)
    table.add_column("NET_TX", justify="right")
    table.add_column("NAPI polls", justify="right")
    table.add_column("budget out", justify="right")
    table.add_column("backlog drops", justify="right")
    table.add_column("squeezed", justify="right")
    for cpu in document.cpus:
        def share(vector: str, cpu: CpuView = cpu) -> str:
            if not document.duration_s:
                return "-"
            return f"{100 * cpu.softirq_time_ns(vector) / (document.duration_s * 1e9):.1f}%"

        table.add_row(str(cpu.cpu), share("NET_RX"), _latency_percentiles(cpu, "NET_RX"), share("NET_TX"),
                      str(cpu.napi_polls), str(cpu.napi_budget_exhausted), str(cpu.backlog_drops),
                      str(cpu.time_squeeze))
    return table


def _latency_percentiles(cpu: CpuView, vector: str) -> str:
    """p50/p90/p99 of a log2 run-time histogram, interpolated in its buckets
    (profiler/percentiles.py; docs/exports.md says how)."""
    values = cpu.latency_percentiles_ns(vector)
    if any(v is None for v in values):
        return "-"
    return "/".join(microseconds(v) for v in values)


def microseconds(value_ns: float) -> str:
    """A duration in ns as the report shows it in µs."""
    value = value_ns / 1000
    return f"{value:.1f}" if value < 10 else f"{value:.0f}"


def _drop_sites(capture: dict) -> Table | None:
    sites = capture.get("drop_sites", [])
    if not sites:
        return None
    table = _table("Where the kernel dropped")
    table.add_column("reason", no_wrap=True)
    table.add_column("kernel function", overflow="fold")
    table.add_column("drops", justify="right")
    for site in sites[:MAX_DROP_SITES]:
        table.add_row(Text(site["reason"]), Text(site["symbol"]), str(site["count"]))
    return table


def _si(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.1f}{unit}"
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def _cost(capture: dict) -> RenderableType | None:
    """What netprof itself cost: kernel time in its programs, its own CPU and memory."""
    cost = capture.get("cost")
    if not cost:
        return None
    process = cost.get("process", {})
    bpf = cost.get("bpf", {})
    stats = cost.get("bpf_stats", {})
    title = (f"netprof's own cost: process {process.get('cpu_percent', 0):.1f}% of a CPU "
             f"(user {process.get('user_cpu_percent', 0):.1f}%), RSS {process.get('rss_bytes', 0) / 2**20:.0f} MiB"
             + (f" ({process['rss_anon_bytes'] / 2**20:.0f} MiB its own)" if process.get("rss_anon_bytes") else ""))
    if stats.get("enabled"):
        per_event = bpf.get("ns_per_event")
        title += (f"; BPF {bpf.get('cpu_percent', 0):.2f}% of a CPU, {_si(bpf.get('events_per_s', 0))} events/s"
                  + (f" at {per_event:.0f} ns" if per_event is not None else "")
                  + f" (timed {cost.get('timed_s', 0):.0f} of {cost.get('duration_s', 0):.0f} s)")
    else:
        title += f"; BPF time not measured ({stats.get('error') or 'statistics off'})"
    probes = [probe for probe in cost.get("probes", []) if probe.get("events")]
    if not probes:
        return Text(title, style="bold")
    # The summary is a line of its own: as a table title it would wrap at the table's width.
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("program", no_wrap=True)
    table.add_column("hook", overflow="fold")
    table.add_column("events/s", justify="right")
    table.add_column("ns/event", justify="right")
    table.add_column("CPU %", justify="right")
    for probe in probes:
        per_event = probe.get("ns_per_event")
        table.add_row(Text(probe["program"]), Text(probe["hook"]), _si(probe.get("events_per_s", 0)),
                      "-" if per_event is None else f"{per_event:.0f}", f"{probe.get('cpu_percent', 0):.3f}")
    return Group(Text(title, style="bold"), table)


def _sections(capture: dict) -> list[RenderableType | None]:
    return [
        _header(capture), _findings(capture), _pods(capture), _listeners(capture), _flows(capture),
        _cpus(capture), _drop_sites(capture), _probes(capture), _cost(capture),
    ]


def render(capture: dict) -> Group:
    capture = inert_tree(capture)
    sections = _sections(capture)
    parts: list[RenderableType] = []
    for section in sections:
        if section is not None:
            parts += [section, Text("")]
    lost = {k: v for k, v in capture.get("lost_events", {}).items() if v}
    if lost:
        parts.append(Text("events not counted (a kernel map was full, or the kernel skipped a program's run): " +
                          ", ".join(f"{k} {v}" for k, v in lost.items()), style="yellow"))
    return Group(*parts)


def _plain(cell: object) -> str:
    text = cell.plain if isinstance(cell, Text) else str(cell)
    return " ".join(text.split())  # no tab or line break inside a field


def render_tsv(capture: dict) -> str:
    """The report's tables as tab-separated text for scripts: for each table a `# title`
    line, a header line, then its rows -- the same cells the report shows, from the same
    code, so the two never disagree. (The JSON, `--json`, is the complete contract.)"""
    capture = inert_tree(capture)
    lines: list[str] = []
    for section in _sections(capture):
        if not isinstance(section, Table):
            continue
        title = section.title.plain if isinstance(section.title, Text) else str(section.title or "")
        lines.append(f"# {_plain(title)}")
        lines.append("\t".join(_plain(column.header) for column in section.columns))
        for row in range(section.row_count):
            lines.append("\t".join(_plain(column._cells[row]) for column in section.columns))
        lines.append("")
    return "\n".join(lines)


def print_report(capture: dict, console: Console | None = None) -> None:
    if console is None:
        # Piped or redirected: no width to fit, so no wrapping (a pod name cut across lines
        # breaks grep); at a terminal, rich fits the tables to its width.
        console = Console() if sys.stdout.isatty() else Console(width=100_000)
    console.print(render(capture))
