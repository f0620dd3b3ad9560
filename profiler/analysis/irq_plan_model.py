"""The IRQ affinity plan as data: queue IRQ moves, RPS/XPS settings, per-NIC spreads, and the
plan that holds them (`IrqPlan`). The plan renders itself as shell commands, as a bash script
(irq_script.py), as `Change`s for `netprof fix --apply`, and as a `Fix`; `profiler.analysis.irq_plan` makes one.
"""
from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from profiler.analysis.findings import Change, Fix
from profiler.analysis.irq_script import render_irq_script
from profiler.analysis.irq_text import cpus_phrase, irq_list, kind_suffix, safe_text
from profiler.system.cpus import format_cpu_list, format_cpu_mask
from profiler.system.irqs import QueueKind

SteeringKind = Literal["rps", "xps"]


@dataclass(frozen=True)
class QueueMove:
    """Pin one queue IRQ to one CPU: a write to /proc/irq/<irq>/smp_affinity_list."""

    nic: str
    queue_index: int
    kind: QueueKind
    irq: int
    from_cpus: frozenset[int]          # where its interrupts land now (effective affinity)
    to_cpu: int
    reason: str
    numa_node: int | None = None       # the NIC's, for the operator's comment
    current_text: str = ""             # the affinity file as read, the Change's expected_current
    # Kernels of the last decade all have smp_affinity_list; a tree holding only the hex-mask
    # smp_affinity is written in that form instead.
    affinity_file: Literal["smp_affinity_list", "smp_affinity"] = "smp_affinity_list"

    @property
    def path(self) -> str:
        return f"/proc/irq/{self.irq}/{self.affinity_file}"

    @property
    def value(self) -> str:
        if self.affinity_file == "smp_affinity":
            return format_cpu_mask({self.to_cpu}, mask_width_bits(self.current_text))
        return str(self.to_cpu)


@dataclass(frozen=True)
class SteeringSetting:
    """An RPS (rx-<n>/rps_cpus) or XPS (tx-<n>/xps_cpus) mask for one queue."""

    kind: SteeringKind
    nic: str
    queue_index: int
    from_cpus: frozenset[int]
    to_cpus: frozenset[int]
    path: str                          # absolute, as on the node: /sys/class/net/eth0/queues/rx-0/rps_cpus
    reason: str
    value: str = ""                    # to_cpus in the kernel's hex mask layout for this file
    current_text: str = ""             # the file as read, the Change's expected_current


@dataclass(frozen=True)
class NicSpread:
    """What the plan does with one multi-queue NIC: its queues over these CPUs."""

    nic: str
    queue_count: int
    cpus: frozenset[int]
    reason: str = ""
    queue_irqs: tuple[int, ...] = ()    # every queue IRQ of the NIC, moved or staying


@dataclass(frozen=True)
class IrqPlan:
    moves: tuple[QueueMove, ...]
    rps: tuple[SteeringSetting, ...]
    xps: tuple[SteeringSetting, ...]
    notes: tuple[str, ...]
    irqbalance_running: bool
    root: Path = field(default=Path("/"), compare=False)
    spreads: tuple[NicSpread, ...] = ()   # only NICs with at least one move

    @property
    def has_changes(self) -> bool:
        return bool(self.moves or self.rps or self.xps)

    @property
    def planned_irqs(self) -> tuple[int, ...]:
        """The IRQs whose placement the plan sets or relies on (the ones staying put too):
        what irqbalance must leave alone for the plan to hold."""
        irqs = {move.irq for move in self.moves}
        for spread in self.spreads:
            irqs.update(spread.queue_irqs)
        return tuple(sorted(irqs))

    def changes(self, root: Path = Path("/")) -> tuple[Change, ...]:
        """One file write per move and mask, keyed by absolute path: the node's own
        (/proc/irq/101/smp_affinity_list), which is what `netprof fix --apply` takes (it is
        given its root separately); or under `root`, to point at a recorded tree's files."""
        base = Path(root)
        return tuple(
            Change(kind="file", key=str(base / path.lstrip("/")), value=value, expected_current=current)
            for path, value, current, _ in self._writes()
        )

    def commands(self) -> tuple[str, ...]:
        """What an operator would type, one write per line, each with its why as a comment."""
        lines: list[str] = []
        if self.irqbalance_running and self.moves:
            lines.append(
                "# irqbalance is running and would undo these writes: first stop it "
                "(systemctl stop irqbalance && systemctl disable irqbalance) or ban "
                f"{irq_list(self.planned_irqs)} from it (--banirq)"
            )
        for path, value, _, comment in self._writes():
            lines.append(f"echo {shlex.quote(value)} > {shlex.quote(path)}  # {comment}")
        return tuple(lines)

    def script(self, root: Path | None = None) -> str:
        """A bash script applying the plan (see `render_irq_script`).

        root: prefix for every path the script touches, for a host filesystem mounted
        elsewhere (a container with the host's /proc and /sys under /host) or a test tree.
        """
        return render_irq_script(
            self._writes(),
            notes=self.notes,
            persistence=self.persistence,
            has_affinity_writes=bool(self.moves),
            planned_irqs=self.planned_irqs,
            root=root,
        )

    @property
    def persistence(self) -> str:
        return (
            "IRQ affinity and RPS/XPS masks do not survive a reboot, a driver reload or a "
            "channel change (ethtool -L): the kernel re-creates the vectors and queues with "
            "their defaults. To keep them, run this script at boot once the NICs are up (a "
            "systemd oneshot unit, After=network-online.target) and again whenever an interface "
            "is re-created or reset (a udev rule on its add event); the NIC vendor's "
            "set_irq_affinity script does the affinity part the same way. On a Kubernetes node, "
            "a privileged DaemonSet that runs the script at each boot keeps it with the node pool "
            "rather than with one machine; it needs hostPID (to see irqbalance) and hostNetwork "
            "(so /sys/class/net shows the node's interfaces, not the pod's)."
        )

    def to_fix(self, evidence: Mapping[str, Any]) -> Fix | None:
        """The plan as a node-scope Fix, or None when there is nothing to change.

        The script goes in `snippet`; `evidence` (what motivated the plan) is spelled out in
        the rationale so the fix carries it wherever it is shown.
        """
        if not self.has_changes:
            return None
        spread_nics = {spread.nic for spread in self.spreads}
        rationale_parts = [spread.reason for spread in self.spreads]
        rationale_parts += [move.reason for move in self.moves if move.nic not in spread_nics]
        rationale_parts += [setting.reason for setting in (*self.rps, *self.xps)]
        rationale_parts += list(self.notes)
        if evidence:
            rationale_parts.append("Evidence: " + _format_evidence(evidence))
        return Fix(
            scope="node",
            title=self._title(),
            rationale="\n".join(rationale_parts),
            commands=self.commands(),
            changes=self.changes(),
            persistence=self.persistence,
            snippet=self.script(),
        )

    def _title(self) -> str:
        parts: list[str] = []
        for spread in self.spreads:
            moving = sum(1 for move in self.moves if move.nic == spread.nic)
            parts.append(
                f"spread {safe_text(spread.nic)}'s {spread.queue_count} queue IRQs over CPUs "
                f"{format_cpu_list(spread.cpus)} ({moving} move{'s' if moving != 1 else ''})"
            )
        spread_nics = {spread.nic for spread in self.spreads}
        for move in self.moves:
            if move.nic not in spread_nics:
                parts.append(f"move {safe_text(move.nic)} queue {move.queue_index} (IRQ {move.irq}) to CPU {move.to_cpu}")
        for setting in (*self.rps, *self.xps):
            parts.append(
                f"{setting.kind.upper()} on {safe_text(setting.nic)} "
                f"{'rx' if setting.kind == 'rps' else 'tx'}-{setting.queue_index} over CPUs {format_cpu_list(setting.to_cpus)}"
            )
        title = "IRQ affinity: " + "; ".join(parts[:3])
        if len(parts) > 3:
            title += f"; and {len(parts) - 3} more"
        return title

    def _writes(self) -> list[tuple[str, str, str, str]]:
        """(absolute path, value, what was read, comment) for every write, moves first."""
        writes: list[tuple[str, str, str, str]] = []
        for move in self.moves:
            node = f" (NUMA node {move.numa_node})" if move.numa_node is not None else ""
            writes.append((
                move.path,
                move.value,
                move.current_text,
                safe_text(f"{move.nic} queue {move.queue_index}{kind_suffix(move.kind)} (IRQ {move.irq}): "
                      f"{cpus_phrase(move.from_cpus)} → CPU {move.to_cpu}{node}"),
            ))
        for setting in (*self.rps, *self.xps):
            direction = "rx" if setting.kind == "rps" else "tx"
            writes.append((
                setting.path,
                setting.value,
                setting.current_text,
                safe_text(f"{setting.nic} {direction}-{setting.queue_index}: {setting.kind.upper()} "
                      f"{cpus_phrase(setting.from_cpus, empty='off')} → CPUs {format_cpu_list(setting.to_cpus)}"),
            ))
        return writes


# --------------------------------------------------------------------------- helpers


def mask_width_bits(text: str) -> int:
    """How many CPU bits a mask file holds, from its layout: `3` -> 4, `00000000,00000000` -> 64.

    Writing back in the same layout keeps the script's "already holds this value" check exact.
    """
    words = text.strip().split(",")
    return 4 * len(words[0]) + 32 * (len(words) - 1)


def _format_evidence(evidence: Mapping[str, Any]) -> str:
    parts: list[str] = []
    for key in sorted(evidence, key=str):
        value = evidence[key]
        if isinstance(value, Mapping):
            inner = ", ".join(f"{k}={_format_value(v)}" for k, v in sorted(value.items(), key=lambda kv: str(kv[0])))
            parts.append(f"{key}: {{{inner}}}")
        else:
            parts.append(f"{key}: {_format_value(value)}")
    return safe_text("; ".join(parts))


def _format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)
