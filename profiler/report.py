"""The human report of a capture, rendered from its profile JSON (so a saved capture renders
the same as a live one)."""
from __future__ import annotations

from rich.console import Console, Group
from rich.table import Table
from rich.text import Text

MAX_FLOWS = 10


def _rate(count: int, duration_s: float) -> str:
    return f"{count / duration_s:.1f}" if duration_s > 0 else "-"


def render(capture: dict) -> Group:
    duration = float(capture.get("duration_s", 0.0))
    kernel = capture.get("kernel", {})
    head = Text()
    head.append("netprof profile", style="bold")
    head.append(f"  {duration:.1f}s on kernel {kernel.get('release', '?')}")
    head.append("  BTF" if kernel.get("btf") else "  no BTF")
    head.append("" if kernel.get("kprobes") else ", no kprobes")
    if capture.get("interrupted"):
        head.append("  (interrupted: partial capture)", style="yellow")

    probes = Table(title="Probes", title_justify="left", show_edge=False, pad_edge=False)
    probes.add_column("probe")
    probes.add_column("status")
    probes.add_column("via")
    for probe in capture.get("probes", []):
        status = Text("attached", style="green") if probe["attached"] else Text(
            f"not attached: {probe['error']}", style="red"
        )
        probes.add_row(probe["name"], status, probe["via"])

    pods = Table(title="Pods", title_justify="left", show_edge=False, pad_edge=False)
    pods.add_column("pod")
    pods.add_column("netns", justify="right")
    pods.add_column("retransmits", justify="right")
    pods.add_column("per s", justify="right")
    pods.add_column("segments", justify="right")
    for pod in capture.get("pods", []):
        style = "bold red" if pod["retransmits"] else ""
        pods.add_row(pod["pod"], str(pod["netns"]), str(pod["retransmits"]),
                     _rate(pod["retransmits"], duration), str(pod.get("retransmitted_segments", "")),
                     style=style)
    if not capture.get("pods"):
        pods.add_row("(no pods seen)", "", "", "", "")

    flows = Table(title=f"Top flows by retransmits (of {len(capture.get('flows', []))})",
                  title_justify="left", show_edge=False, pad_edge=False)
    flows.add_column("pod", overflow="fold")
    flows.add_column("source → destination", no_wrap=True)
    flows.add_column("retransmits", justify="right")
    flows.add_column("states", overflow="fold")
    for flow in capture.get("flows", [])[:MAX_FLOWS]:
        states = ", ".join(f"{s} {n}" for s, n in sorted(flow.get("states", {}).items(), key=lambda i: -i[1]))
        flows.add_row(flow["pod"], f"{flow['saddr']}:{flow['sport']} → {flow['daddr']}:{flow['dport']}",
                      str(flow["retransmits"]), states)
    if not capture.get("flows"):
        flows.add_row("(no retransmits)", "", "", "")

    parts = [head, Text(""), probes, Text(""), pods, Text(""), flows]
    lost = {k: v for k, v in capture.get("lost_events", {}).items() if v}
    if lost:
        parts += [Text(""), Text("events not counted (kernel map full): " +
                                 ", ".join(f"{k} {v}" for k, v in lost.items()), style="yellow")]
    return Group(*parts)


def print_report(capture: dict, console: Console | None = None) -> None:
    (console or Console()).print(render(capture))
