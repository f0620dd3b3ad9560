"""skb drops by reason per pod, per CPU and per kernel call site; receive-queue-full events.

Per interval this writes `drops` and `rcvqueue_full` of each pod that had any, `drops` of each
CPU that dropped, the busiest drop sites, and map overflows into `frame.lost`. The interval's
TCP_LISTEN_OVERFLOW drops per (netns, listening port) go to `frame.listen_overflow_drops`, for
the source that reports listeners (it charges them to its listeners; this one does not). When the probe samples kernel stacks, each interval's drops per
(pod, reason, stack) go to `frame.stacks`, symbolized once per stack.
"""
from __future__ import annotations

from collections import Counter
from types import MappingProxyType
from typing import Mapping

import numpy as np

from ..kernel.addresses import format_address
from ..kernel.kallsyms import Kallsyms
from ..kernel.loader import BpfLoader
from ..kernel.maps import counter_deltas
from ..kernel.stacks import StackSymbolizer
from ..probes.base import ProbeStatus
from ..probes.drops import IGNORED_SLOTS, UNCOUNTED_SLOTS, DropCounts, DropProbe, reason_name
from ..snapshot import DropSite, FlowDrops, FlowKey, ListenerPort, SnapshotFrame
from .base import ProbeSource, write_stack_samples

# Drop sites written per interval, busiest first; the capture keeps its own top list.
MAX_SITES_PER_INTERVAL = 50
# TCP flows with drops written per interval, busiest first.
MAX_FLOWS_PER_INTERVAL = 200


def busiest(prev_keys: np.ndarray | None, prev_counts: np.ndarray | None, keys: np.ndarray, counts: np.ndarray,
            limit: int) -> tuple[np.ndarray, np.ndarray]:
    """(indices of the keys that grew this interval, busiest first, at most `limit`; the
    per-key increase) -- for the per-interval top lists of drop sites and flows."""
    delta = counter_deltas(prev_keys, prev_counts, keys, counts)["count"]
    grew = np.flatnonzero(delta > 0)
    return grew[np.argsort(-delta[grew], kind="stable")][:limit], delta


class DropSource(ProbeSource[DropCounts]):
    name = "drops"
    probe: DropProbe

    def __init__(self, probe: DropProbe | None = None, kallsyms: Kallsyms | None = None):
        self._stacks = StackSymbolizer(kallsyms)
        # One parse of /proc/kallsyms for both: the probe's call sites (kernels without drop
        # reasons) and the names of sites and stacks.
        super().__init__(probe or DropProbe(kallsyms=self._stacks.kallsyms))
        self._symbols: dict[int, str] = {}
        self._reason_names: Mapping[int, str] = {}
        # Frees the probe saw and did not count as drops (NOT_SPECIFIED, ...), since attach.
        self.ignored_totals: Mapping[str, int] = MappingProxyType({})

    def attach(self, loader: BpfLoader) -> list[ProbeStatus]:
        statuses = super().attach(loader)
        self._reason_names = self.probe.reason_names
        if self.probe.rcvqueue_status is not None:
            statuses.append(self.probe.rcvqueue_status)
        stacks_status = getattr(self.probe, "stacks_status", None)
        if stacks_status is not None:
            statuses.append(stacks_status)
        if self._attached:
            # Every drop has a site to name: read the symbols at startup (≈70 ms), not inside
            # the first interval that has a drop.
            self._stacks.kallsyms()
        return statuses

    def switch_detail(self, on: bool) -> None:
        # The counts never stop; only the stack walks do.
        self.probe.pause_stacks(not on)

    def read(self, frame: SnapshotFrame):
        # The capture's last read gives each key's pending events to its last stack.
        return self.probe.read(flush=frame.final)

    def write_interval(self, frame: SnapshotFrame, previous: DropCounts | None, counts: DropCounts) -> None:
        self._collect_pods(frame, previous, counts)
        self._collect_cpus(frame, previous, counts)
        self._collect_sites(frame, previous, counts)
        self._collect_listeners(frame, previous, counts)
        self._collect_stacks(frame, previous, counts)
        self._collect_flows(frame, previous, counts)
        for slot in UNCOUNTED_SLOTS:
            increase = counts.uncounted[slot] - (previous.uncounted[slot] if previous else 0)
            # Ignored frees are a deliberate choice (not drops); a full map is a loss.
            (frame.ignored if slot in IGNORED_SLOTS else frame.lost)[slot] += increase
        self.ignored_totals = MappingProxyType({slot: counts.uncounted[slot] for slot in IGNORED_SLOTS})

    def _name(self, reason: int) -> str:
        return reason_name(reason, self._reason_names)

    def _collect_pods(self, frame: SnapshotFrame, previous: DropCounts | None, counts: DropCounts) -> None:
        drops: dict[int, Counter[str]] = {}
        delta = counter_deltas(previous.netns_reasons if previous else None,
                               previous.per_netns_reason if previous else None,
                               counts.netns_reasons, counts.per_netns_reason)["count"]
        for index in np.flatnonzero(delta > 0):
            key = counts.netns_reasons[index]
            drops.setdefault(int(key["netns_inode"]), Counter())[self._name(int(key["reason"]))] += int(delta[index])
        rcvqueue: dict[int, int] = {}
        delta = counter_deltas(previous.rcvqueue_netns if previous else None,
                               previous.per_rcvqueue_netns if previous else None,
                               counts.rcvqueue_netns, counts.per_rcvqueue_netns)["count"]
        for index in np.flatnonzero(delta > 0):
            rcvqueue[int(counts.rcvqueue_netns[index]["netns_inode"])] = int(delta[index])
        for netns in sorted(drops.keys() | rcvqueue.keys()):
            values = {}
            if netns in drops:
                values["drops"] = MappingProxyType(dict(drops[netns]))
            if netns in rcvqueue:
                values["rcvqueue_full"] = rcvqueue[netns]
            frame.pod(netns, **values)

    def _collect_cpus(self, frame: SnapshotFrame, previous: DropCounts | None, counts: DropCounts) -> None:
        cpus = counts.per_cpu_reason.shape[1] if counts.per_cpu_reason.ndim == 2 else 0
        for cpu in range(cpus):
            delta = counter_deltas(previous.cpu_reasons if previous else None,
                                   previous.per_cpu_reason[:, cpu] if previous else None,
                                   counts.cpu_reasons, counts.per_cpu_reason[:, cpu])["count"]
            dropped = {
                self._name(int(counts.cpu_reasons[index]["reason"])): int(delta[index])
                for index in np.flatnonzero(delta > 0)
            }
            if dropped:
                frame.cpu(cpu, drops=MappingProxyType(dropped))

    def _collect_sites(self, frame: SnapshotFrame, previous: DropCounts | None, counts: DropCounts) -> None:
        busy, delta = busiest(previous.sites if previous else None, previous.per_site if previous else None,
                              counts.sites, counts.per_site, MAX_SITES_PER_INTERVAL)
        for index in busy:
            key = counts.sites[index]
            frame.drop_sites.append(DropSite(
                reason=self._name(int(key["reason"])),
                symbol=self._symbolize(int(key["location"])),
                count=int(delta[index]),
            ))

    def _collect_flows(self, frame: SnapshotFrame, previous: DropCounts | None, counts: DropCounts) -> None:
        busy, delta = busiest(previous.flows if previous else None, previous.per_flow if previous else None,
                              counts.flows, counts.per_flow, MAX_FLOWS_PER_INTERVAL)
        for index in busy:
            key = counts.flows[index]
            family = int(key["family"])
            netns = int(key["netns_inode"])
            flow = FlowKey(netns=netns, family=family, saddr=format_address(family, key["saddr"]),
                           sport=int(key["sport"]), daddr=format_address(family, key["daddr"]),
                           dport=int(key["dport"]))
            frame.flow_drops.append(FlowDrops(pod=frame.label(netns), flow=flow,
                                              reason=self._name(int(key["reason"])),
                                              symbol=self._symbolize(int(key["location"])),
                                              count=int(delta[index])))

    def _collect_listeners(self, frame: SnapshotFrame, previous: DropCounts | None, counts: DropCounts) -> None:
        delta = counter_deltas(previous.listeners if previous else None,
                               previous.per_listener if previous else None,
                               counts.listeners, counts.per_listener)["count"]
        for index in np.flatnonzero(delta > 0):
            key = counts.listeners[index]
            frame.listen_overflow_drops[ListenerPort(int(key["netns_inode"]), int(key["port"]))] += int(delta[index])

    def _collect_stacks(self, frame: SnapshotFrame, previous: DropCounts | None, counts: DropCounts) -> None:
        write_stack_samples(frame, previous, counts, "drop",
                            reason_of=lambda key: self._name(int(key["reason"])),
                            frames_of=self._stacks.frames)

    def _symbolize(self, address: int) -> str:
        symbol = self._symbols.get(address)
        if symbol is None:
            symbol = self._symbols[address] = self._stacks.kallsyms().symbolize(address)
        return symbol
