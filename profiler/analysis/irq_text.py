"""Text shared by the IRQ plan's notes, comments and script: IRQ and CPU lists in the operator's
words, and text read from /sys or /proc made safe to print."""
from __future__ import annotations

from profiler.system.cpus import format_cpu_list
from profiler.system.irqs import QueueKind

# irqbalance's default rebalancing interval (its --interval option).
IRQBALANCE_INTERVAL_S = 10


def irq_list(irqs: tuple[int, ...]) -> str:
    if len(irqs) == 1:
        return f"IRQ {irqs[0]}"
    return f"IRQs {format_cpu_list(irqs)}"


def kind_suffix(kind: QueueKind) -> str:
    return "" if kind == "combined" else f" {kind}"


def cpus_phrase(cpus: frozenset[int], empty: str = "unknown CPU") -> str:
    if not cpus:
        return empty
    return f"CPU{'s' if len(cpus) > 1 else ''} {format_cpu_list(cpus)}"


def safe_text(text: str) -> str:
    """Text read from /sys or /proc made safe for a shell comment or a one-line message:
    printable characters only (an interface name can hold anything but '/', ':' and spaces)."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def comment_block(text: str, width: int = 96) -> list[str]:
    lines: list[str] = []
    line = "#"
    for word in safe_text(text).split():
        if len(line) + 1 + len(word) > width and line != "#":
            lines.append(line)
            line = "#"
        line += " " + word
    if line != "#":
        lines.append(line)
    return lines
