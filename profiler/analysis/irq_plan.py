"""Where each NIC queue's IRQ should run, RPS/XPS for single-queue NICs, and irqbalance.

`plan_irq_affinity(topology, ...)` turns what `profiler.system.irqs.read_irq_topology` read into
an `IrqPlan`: queue IRQ moves, RPS/XPS mask settings, and notes. The plan is data
(irq_plan_model.py); it renders itself as shell commands, as a bash script (irq_script.py), as
`Change`s for `netprof fix --apply`, and as a `Fix`. Planning writes nothing. It reads, under the root it is handed, only the files it
proposes to change, so each `Change.expected_current` is exactly what that file held.

The rules, and why (docs/irq-plan.md says the same at more length):
- A NIC's queue IRQs go to the online CPUs of its NUMA node (its PCI function's local_cpulist):
  the NIC DMAs packets into memory on that node, and the CPU taking the interrupt runs NAPI
  and most of the stack over those packets. A remote CPU pays cross-node traffic per packet.
- Housekeeping CPUs (the caller's choice, none by default) are left out; if nothing is left,
  they are used anyway, with a note, because a queue needs some CPU.
- Queues are spread round-robin over the candidates in CPU order, one queue per CPU while
  there are CPUs, so NET_RX work of different queues runs in parallel. A queue that is already
  alone (among its NIC's queues) on one candidate CPU stays there: fewer moves, same result.
  All vectors of one queue index (a combined TxRx vector, or separate rx-i and tx-i vectors)
  go to one CPU. In CPU order, queue i lands on the i-th local CPU: the layout drivers give
  their default XPS maps (mlx5, ixgbe), so tx completions arrive on the CPU that sent.
- A NIC with one rx queue cannot be spread by IRQ affinity: one queue raises one interrupt on
  one CPU, and that CPU does all of the NIC's NET_RX. RPS then hashes flows to other CPUs
  after the driver's poll; XPS is proposed only where there are tx queues to choose between.
- irqbalance rewrites affinity every 10 s by default, so a manual plan would be undone: the
  plan notes how to stop it or ban the planned IRQs, and the script refuses to write affinity
  while it runs unless FORCE=1 (RPS/XPS masks it leaves alone).
"""
from __future__ import annotations

import math
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from profiler.analysis.irq_plan_model import (
    IrqPlan,
    NicSpread,
    QueueMove,
    SteeringKind,
    SteeringSetting,
    mask_width_bits,
)
from profiler.analysis.irq_text import IRQBALANCE_INTERVAL_S, cpus_phrase, kind_suffix, safe_text
from profiler.kernel.root_files import read_text_in_root
from profiler.system.cpus import format_cpu_list, format_cpu_mask, parse_cpu_mask
from profiler.analysis.irqbalance_plan import irqbalance_note
from profiler.system.irqbalance import IrqbalanceState
from profiler.system.irqs import PCI_ADDRESS, IrqTopology, Nic, NicQueue

# The plan's types live in irq_plan_model; they stay importable from here, beside the planner.
__all__ = [
    "BUSY_NET_RX_SHARE", "IRQBALANCE_INTERVAL_S", "IrqPlan", "NicSpread", "QueueMove", "SteeringKind",
    "SteeringSetting", "plan_irq_affinity", "spread_channels",
]


# A CPU spending at least half its time in NET_RX has no room left for the protocol work RPS
# would hand back to it: the kernel's scaling.rst advises leaving the interrupting CPU out of
# the RPS map "at high interrupt rate". Below that, it stays in (no IPI for its share of flows).
BUSY_NET_RX_SHARE = 0.5

# --------------------------------------------------------------------------- planning


def plan_irq_affinity(
    topology: IrqTopology,
    *,
    irqbalance_running: bool,
    housekeeping_cpus: frozenset[int] = frozenset(),
    net_rx_share_by_cpu: Mapping[int, float] | None = None,
    root: Path = Path("/"),
    irqbalance: IrqbalanceState | None = None,
) -> IrqPlan:
    """Plan queue IRQ placement and RPS/XPS for every NIC in `topology`.

    housekeeping_cpus: CPUs to keep NIC queue IRQs and RPS off (CPU 0 often carries the timer,
    legacy and other devices' IRQs; on a Kubernetes node, the CPUs of latency-sensitive pinned
    pods). net_rx_share_by_cpu: the fraction of time each CPU spent in NET_RX over the capture
    (the softirq probe's), quoted in reasons as evidence and used to keep a saturated
    interrupting CPU out of an RPS map.
    root: where the topology was read; the files to change are read again there for
    `expected_current`. irqbalance: what it bans (system.irqbalance), for the note on it.
    """
    moves: list[QueueMove] = []
    spreads: list[NicSpread] = []
    rps: list[SteeringSetting] = []
    xps: list[SteeringSetting] = []
    notes: list[str] = []
    online = topology.cpus_online
    if not online:
        notes.append("No online CPUs could be read (sys/devices/system/cpu/online, /proc/interrupts): nothing planned.")
        return IrqPlan((), (), (), tuple(notes), irqbalance_running, root)
    share = dict(net_rx_share_by_cpu or {})
    for nic in topology.nics:
        planner = _NicPlanner(nic, online, frozenset(housekeeping_cpus), share, root)
        planner.plan()
        moves += planner.moves
        if planner.spread is not None and planner.moves:
            spreads.append(planner.spread)
        rps += planner.rps
        xps += planner.xps
        notes += planner.notes
    plan = IrqPlan(tuple(moves), tuple(rps), tuple(xps), tuple(notes), irqbalance_running, root, tuple(spreads))
    if not irqbalance_running:
        return plan
    queue_irqs = tuple(sorted({q.irq for nic in topology.nics for q in nic.queues if q.irq is not None}))
    # Where the queue IRQs will be once the plan is applied: what other IRQs should stay off.
    to_cpu = {move.irq: move.to_cpu for move in moves}
    nic_cpus = frozenset(cpu for nic in topology.nics for q in nic.queues if q.irq is not None
                         for cpu in ({to_cpu[q.irq]} if q.irq in to_cpu else q.irq_cpus))
    devices = tuple(nic.device for nic in topology.nics if nic.device and PCI_ADDRESS.match(nic.device)
                    and any(q.irq in plan.planned_irqs for q in nic.queues))
    note = irqbalance_note(irqbalance or IrqbalanceState(running=True), plan.planned_irqs, queue_irqs,
                           nic_cpus, devices)
    return replace(plan, notes=(*plan.notes, note)) if note else plan


@dataclass
class _Channel:
    """All IRQ vectors of one queue index of one NIC: they move together."""

    index: int
    vectors: list[NicQueue]

    @property
    def cpus(self) -> frozenset[int]:
        return frozenset().union(*(vector.irq_cpus for vector in self.vectors))


class _NicPlanner:
    def __init__(
        self,
        nic: Nic,
        online: frozenset[int],
        housekeeping: frozenset[int],
        share: dict[int, float],
        root: Path,
    ) -> None:
        self.nic = nic
        self.name = safe_text(nic.name)
        self.online = online
        self.housekeeping = housekeeping
        self.share = share
        self.root = root
        self.moves: list[QueueMove] = []
        self.spread: NicSpread | None = None
        self.rps: list[SteeringSetting] = []
        self.xps: list[SteeringSetting] = []
        self.notes: list[str] = []
        self.local, self.where, self.locality = self._local_cpus()
        self.candidates = self._candidates()

    # ------------------------------------------------------------------ candidate CPUs

    def _local_cpus(self) -> tuple[frozenset[int], str, str]:
        """The NIC's online local CPUs; how to name them ("ens1f0's NUMA node 0 (CPUs 0-7)");
        and how to say a CPU is one of them ("on ens1f0's NUMA node 0")."""
        nic = self.nic
        local = (nic.local_cpus or frozenset()) & self.online
        node = f"{self.name}'s NUMA node {nic.numa_node}" if nic.numa_node is not None else f"{self.name}'s NUMA node"
        if local and local != self.online:
            return local, f"{node} (CPUs {format_cpu_list(local)})", f"on {node}"
        if local:
            return local, f"the online CPUs ({format_cpu_list(local)})", f"local to {self.name} (as every online CPU is)"
        # No local_cpulist (a recorded tree without it, a device behind an odd bus): every
        # online CPU is as good as any other for all we know.
        return (self.online, f"the online CPUs ({format_cpu_list(self.online)})",
                f"online ({self.name}'s local CPUs are unknown)")

    def _candidates(self) -> frozenset[int]:
        candidates = self.local - self.housekeeping
        if candidates:
            return candidates
        if self.local & self.housekeeping and self._has_vectors_or_rx():
            self.notes.append(
                f"{self.name}: every CPU on {self.where} is a housekeeping CPU; its queues are planned "
                f"on them anyway, since an interrupt needs a CPU (pass fewer housekeeping CPUs to change this)."
            )
        return self.local

    def _has_vectors_or_rx(self) -> bool:
        return any(queue.irq is not None for queue in self.nic.queues) or self.nic.rx_queue_count > 0

    # ------------------------------------------------------------------ the plan

    def plan(self) -> None:
        channels = self._channels()
        rx_queue_count = self.nic.rx_queue_count or len(
            {q.index for q in self.nic.queues if q.kind in ("rx", "combined")}
        )
        if rx_queue_count == 1:
            self._plan_single_queue(channels)
            return
        if not channels:
            if rx_queue_count > 1:
                self.notes.append(
                    f"{self.name} has {rx_queue_count} rx queues but no queue IRQs in /proc/interrupts "
                    f"(the interface is down, or its driver names its vectors in a way netprof does not "
                    f"recognise): nothing planned for it."
                )
            return
        self._plan_spread(channels)

    def _channels(self) -> list[_Channel]:
        by_index: dict[int, list[NicQueue]] = {}
        for queue in self.nic.queues:
            if queue.irq is not None:
                by_index.setdefault(queue.index, []).append(queue)
        return [_Channel(index, vectors) for index, vectors in sorted(by_index.items())]

    def _plan_spread(self, channels: list[_Channel]) -> None:
        targets = spread_channels([channel.cpus for channel in channels], sorted(self.candidates))
        count = len(channels)
        per_cpu = math.ceil(count / len(self.candidates))
        if count > len(self.candidates):
            kinds = {vector.kind for channel in channels for vector in channel.vectors}
            channel_args = (f"combined {len(self.candidates)}" if "combined" in kinds
                            else f"rx {len(self.candidates)} tx {len(self.candidates)}")
            self.notes.append(
                f"{self.name} has {count} queue IRQs and {len(self.candidates)} CPUs to put them on "
                f"({self._candidates_phrase()}): up to {per_cpu} queues share a CPU. Fewer channels "
                f"(ethtool -L {shlex.quote(self.nic.name)} {channel_args}) would give each "
                f"queue its own CPU; spreading onto other NUMA nodes would too, at the cost of "
                f"cross-node memory traffic for every packet."
            )
        context = self._pile_evidence(channels)
        load: dict[int, int] = {}
        for target in targets:
            load[target] = load.get(target, 0) + 1
        now = frozenset().union(*(channel.cpus for channel in channels))
        staying = sum(1 for channel, target in zip(channels, targets) if channel.cpus == {target})
        self.spread = NicSpread(
            self.nic.name, count, frozenset(targets),
            reason=(
                f"{self.name}'s {count} queue IRQs run on {cpus_phrase(now, empty='unknown CPUs')}; "
                f"spread round-robin over CPUs {format_cpu_list(targets)}, {self._target_phrase()}, "
                f"at most {max(load.values())} per CPU, so their NET_RX work runs in parallel "
                f"({count - staying} queues move, {staying} stay where they are)."
            ) + context,
            queue_irqs=tuple(sorted(v.irq for channel in channels for v in channel.vectors if v.irq is not None)),
        )
        for channel, target in zip(channels, targets):
            for vector in channel.vectors:
                if vector.irq_cpus == frozenset({target}):
                    continue
                why = self._why_move(vector, channels)
                reason = (
                    f"{self.name} queue {channel.index}{kind_suffix(vector.kind)} (IRQ {vector.irq}) {why}; "
                    f"CPU {target} is {self._target_phrase()}; it will serve {load[target]} of the "
                    f"NIC's {count} queues."
                )
                self._add_move(vector, target, reason + context)

    def _plan_single_queue(self, channels: list[_Channel]) -> None:
        """One rx queue: keep its IRQ on a candidate CPU, spread the stack's work with RPS."""
        rx_vector: NicQueue | None = None
        candidates = sorted(self.candidates)
        for channel in channels:
            for vector in channel.vectors:
                irq_cpu = vector.irq_cpus
                if vector.kind in ("rx", "combined") and rx_vector is None:
                    rx_vector = vector
                if irq_cpu and irq_cpu <= self.candidates:
                    continue
                # Off the NIC's node or on a housekeeping CPU: pin to the first candidate.
                target = candidates[0]
                reason = (
                    f"{self.name} queue {vector.index}{kind_suffix(vector.kind)} (IRQ {vector.irq}) "
                    f"{self._why_move(vector, channels)}; CPU {target} is {self._target_phrase()}."
                )
                if self._add_move(vector, target, reason) and vector is rx_vector:
                    rx_vector = _with_cpus(vector, frozenset({target}))
        rx_queues = [q for q in self.nic.queues if q.kind in ("rx", "combined")]
        rx_index = rx_queues[0].index if rx_queues else 0
        rps_cpus = next((q.rps_cpus for q in rx_queues if q.rps_cpus is not None), None)
        self._plan_rps(rx_index, rx_vector, rps_cpus)
        self._plan_xps()

    def _plan_rps(self, rx_index: int, rx_vector: NicQueue | None, current: frozenset[int] | None) -> None:
        path = f"/sys/class/net/{self.nic.name}/queues/rx-{rx_index}/rps_cpus"
        if current is None:
            self.notes.append(
                f"{self.name} has one rx queue, so one CPU does all of its NET_RX work, but "
                f"{safe_text(path)} could not be read (a kernel without CONFIG_RPS?): RPS cannot be proposed."
            )
            return
        irq_cpus = rx_vector.irq_cpus if rx_vector is not None else frozenset()
        target = self.candidates
        irq_cpu = next(iter(irq_cpus)) if len(irq_cpus) == 1 else None
        busy = irq_cpu is not None and self.share.get(irq_cpu, 0.0) >= BUSY_NET_RX_SHARE
        if busy and irq_cpu in target and len(target) > 1:
            target = target - {irq_cpu}
            placement = (
                f"leaving out CPU {irq_cpu}, which takes the interrupt and already spends "
                f"{self.share[irq_cpu]:.0%} of its time in NET_RX"
            )
        elif irq_cpu is not None and irq_cpu in target:
            placement = (
                f"including CPU {irq_cpu}, which takes the interrupt: its share of flows is then "
                f"processed without an inter-processor interrupt"
            )
        else:
            placement = "over every candidate CPU, since the interrupt may land on any of them"
        if target <= irq_cpus or len(target) < 1:
            self.notes.append(
                f"{self.name} has one rx queue and no other CPU to steer its packets to "
                f"({self._candidates_phrase()}): RPS cannot help here."
            )
            return
        if current == target:
            return
        text = read_text_in_root(self.root, path.lstrip("/"))
        if text is None:
            self.notes.append(f"{self.name}: {path} became unreadable while planning; RPS left out of the plan.")
            return
        current_text = text.strip()
        reason = (
            f"{self.name} has one rx queue, so the CPU taking its interrupt "
            f"({cpus_phrase(irq_cpus, empty='unknown')}) does all of its NET_RX work; RPS spreads its flows "
            f"over CPUs {format_cpu_list(target)}, {self._target_phrase()}, after the driver's poll, "
            f"{placement}."
        ) + self._share_evidence(irq_cpus, target - irq_cpus)
        self.rps.append(SteeringSetting(
            kind="rps", nic=self.nic.name, queue_index=rx_index, from_cpus=current, to_cpus=target,
            path=path, reason=reason, value=format_cpu_mask(target, mask_width_bits(current_text)),
            current_text=current_text,
        ))

    def _plan_xps(self) -> None:
        """XPS picks a tx queue by the sending CPU; with one tx queue there is nothing to pick."""
        tx_queues = sorted(
            {q.index: q for q in self.nic.queues if q.kind in ("tx", "combined") and q.xps_cpus is not None}.values(),
            key=lambda q: q.index,
        )
        if len(tx_queues) < 2:
            return
        cpus = sorted(self.candidates)
        wanted: dict[int, set[int]] = {q.index: set() for q in tx_queues}
        # Each CPU in exactly one tx queue's mask, round-robin: a sender always finds its queue
        # and the queues share the senders evenly.
        for position, cpu in enumerate(cpus):
            wanted[tx_queues[position % len(tx_queues)].index].add(cpu)
        for queue in tx_queues:
            target = frozenset(wanted[queue.index])
            if not target or target == queue.xps_cpus:
                continue
            path = f"/sys/class/net/{self.nic.name}/queues/tx-{queue.index}/xps_cpus"
            text = read_text_in_root(self.root, path.lstrip("/"))
            if text is None:
                continue
            current_text = text.strip()
            self.xps.append(SteeringSetting(
                kind="xps", nic=self.nic.name, queue_index=queue.index,
                from_cpus=queue.xps_cpus or frozenset(), to_cpus=target, path=path,
                reason=(
                    f"{self.name} has one rx queue and {len(tx_queues)} tx queues: XPS maps each sending "
                    f"CPU ({self._target_phrase()}) to one tx queue, so a sender keeps to its queue and "
                    f"its tx completions, instead of hashing flows over queues other CPUs use too."
                ),
                value=format_cpu_mask(target, mask_width_bits(current_text)),
                current_text=current_text,
            ))

    def _add_move(self, vector: NicQueue, target: int, reason: str) -> bool:
        assert vector.irq is not None
        for affinity_file in ("smp_affinity_list", "smp_affinity"):
            text = read_text_in_root(self.root, f"proc/irq/{vector.irq}/{affinity_file}")
            if text is not None:
                break
        else:
            self.notes.append(
                f"{self.name} queue {vector.index}{kind_suffix(vector.kind)} (IRQ {vector.irq}) should move "
                f"to CPU {target}, but /proc/irq/{vector.irq}/smp_affinity_list cannot be read: left out "
                f"of the plan."
            )
            return False
        current_text = text.strip()
        if affinity_file == "smp_affinity" and not _is_mask(current_text):
            self.notes.append(
                f"{self.name} queue {vector.index}{kind_suffix(vector.kind)} (IRQ {vector.irq}): "
                f"/proc/irq/{vector.irq}/smp_affinity holds no CPU mask: left out of the plan."
            )
            return False
        self.moves.append(QueueMove(
            nic=self.nic.name, queue_index=vector.index, kind=vector.kind, irq=vector.irq,
            from_cpus=vector.irq_cpus, to_cpu=target, reason=reason, numa_node=self.nic.numa_node,
            current_text=current_text, affinity_file=affinity_file,
        ))
        return True

    # ------------------------------------------------------------------ reasons

    def _why_move(self, vector: NicQueue, channels: list[_Channel]) -> str:
        cpus = vector.irq_cpus
        if not cpus:
            return "has no readable affinity"
        clauses = [f"runs on CPU {format_cpu_list(cpus)}" if len(cpus) == 1
                   else f"may run on any of CPUs {format_cpu_list(cpus)}, pinned to none"]
        if cpus - self.local:
            clauses.append(f"off {self.where}, so every packet's descriptors and data cross the interconnect")
        if cpus & self.housekeeping:
            clauses.append("a housekeeping CPU" if len(cpus) == 1 else "housekeeping CPUs among them")
        sharing = sum(1 for channel in channels if channel.cpus & cpus) - 1
        if sharing > 0 and len(cpus) == 1:
            clauses.append(f"shared with {sharing} other {self.name} queue{'s' if sharing != 1 else ''}")
        return ", ".join(clauses)

    def _pile_evidence(self, channels: list[_Channel]) -> str:
        """Where the NIC's queue interrupts landed since boot, and the NET_RX share if given."""
        per_cpu: dict[int, int] = {}
        for channel in channels:
            for vector in channel.vectors:
                for cpu, count in enumerate(vector.interrupts_per_cpu):
                    if count:
                        per_cpu[cpu] = per_cpu.get(cpu, 0) + count
        total = sum(per_cpu.values())
        text = ""
        if total:
            top = max(per_cpu, key=lambda cpu: per_cpu[cpu])
            if per_cpu[top] / total >= 0.5:
                text = (f" CPU {top} took {per_cpu[top] / total:.0%} of {self.name}'s "
                        f"{_count(total)} queue interrupts since boot.")
        busy = frozenset().union(*(channel.cpus for channel in channels))
        return text + self._share_evidence(busy, self.candidates - busy)

    def _share_evidence(self, busy: frozenset[int], others: frozenset[int]) -> str:
        if not self.share:
            return ""
        busy_known = sorted(cpu for cpu in busy if cpu in self.share)
        others_known = sorted(cpu for cpu in others if cpu in self.share)
        if not busy_known:
            return ""
        shares = [self.share[cpu] for cpu in busy_known]
        if len(busy_known) == 1:
            busy_text = f"CPU {busy_known[0]} spent {shares[0]:.0%} of its time in NET_RX"
        else:
            busy_text = (f"CPUs {format_cpu_list(busy_known)} spent {min(shares):.0%}–{max(shares):.0%} "
                         f"of their time in NET_RX")
        if not others_known:
            return f" {busy_text}."
        top_other = max(self.share[cpu] for cpu in others_known)
        others = f"CPU{'s' if len(others_known) > 1 else ''} {format_cpu_list(others_known)}"
        if top_other < min(shares):
            return f" {busy_text} while {others} spent at most {top_other:.0%}."
        return f" {busy_text}; {others} up to {top_other:.0%}."

    def _target_phrase(self) -> str:
        """Why a candidate CPU qualifies: 'CPU 3 is <this>', 'CPUs 1-3, <this>'."""
        if self.candidates == self.local:
            return self.locality
        return f"{self.locality} and not a housekeeping CPU"

    def _candidates_phrase(self) -> str:
        return cpus_phrase(self.candidates)


def spread_channels(current_cpus: list[frozenset[int]], candidates: list[int]) -> list[int]:
    """One target CPU per channel (in the order given), spread over `candidates`.

    1. A channel alone on one candidate CPU (no other channel of the NIC on it) stays: moving
       it would change nothing for the better.
    2. The others take their round-robin slot, candidates[position % len(candidates)], while
       that CPU has room. In CPU order this lands queue i on the i-th local CPU, which is also
       how drivers lay out their default XPS maps (mlx5, ixgbe), so tx completions stay on the
       CPU that sent.
    3. What is left goes to the least-loaded CPU with room, lowest CPU first.
    Room: with n channels over c CPUs, n // c each and one more on n % c of them, so no CPU
    ever holds more than ceil(n / c) and the load differs by at most one queue.
    """
    if not candidates:
        raise ValueError("no candidate CPUs")
    count = len(current_cpus)
    base, extra = divmod(count, len(candidates))
    load = {cpu: 0 for cpu in candidates}
    extras_used = 0

    def has_room(cpu: int) -> bool:
        return load[cpu] < base or (load[cpu] == base and extras_used < extra)

    def take(cpu: int) -> None:
        nonlocal extras_used
        if load[cpu] == base:
            extras_used += 1
        load[cpu] += 1

    targets: list[int | None] = [None] * count
    holders: dict[int, int] = {}
    for cpus in current_cpus:
        for cpu in cpus:
            holders[cpu] = holders.get(cpu, 0) + 1
    for position, cpus in enumerate(current_cpus):
        if len(cpus) == 1:
            (cpu,) = cpus
            if cpu in load and holders[cpu] == 1 and has_room(cpu):
                targets[position] = cpu
                take(cpu)
    for position in range(count):
        if targets[position] is None:
            slot = candidates[position % len(candidates)]
            if has_room(slot):
                targets[position] = slot
                take(slot)
    for position in range(count):
        if targets[position] is None:
            cpu = min((c for c in candidates if has_room(c)), key=lambda c: (load[c], c))
            targets[position] = cpu
            take(cpu)
    return [target for target in targets if target is not None]


# --------------------------------------------------------------------------- helpers

def _with_cpus(vector: NicQueue, cpus: frozenset[int]) -> NicQueue:
    return NicQueue(
        vector.nic, vector.index, vector.kind, vector.irq, cpus, cpus, vector.interrupts_per_cpu,
        vector.rps_cpus, vector.xps_cpus, vector.irq_name,
    )


def _is_mask(text: str) -> bool:
    try:
        parse_cpu_mask(text)
    except ValueError:
        return False
    return True


def _count(number: int) -> str:
    for limit, suffix in ((1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")):
        if number >= limit:
            return f"{number / limit:.1f}{suffix}"
    return str(number)
