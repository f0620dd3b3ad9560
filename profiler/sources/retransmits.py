from __future__ import annotations

import numpy as np

from ..kernel.kallsyms import Kallsyms
from ..kernel.loader import BpfLoader
from ..kernel.maps import counter_deltas
from ..kernel.stacks import RETRANSMIT_STACK_REASON, StackSymbolizer
from ..probes.base import ProbeStatus
from ..kernel.addresses import format_address
from ..probes.retransmits import TCP_STATES, RetransmitCounts, RetransmitProbe
from ..snapshot import FlowKey, FlowRetransmits, SnapshotFrame
from .base import ProbeSource, write_stack_samples




class RetransmitSource(ProbeSource[RetransmitCounts]):
    name = "retransmits"

    def __init__(self, probe: RetransmitProbe | None = None, kallsyms: Kallsyms | None = None):
        super().__init__(probe or RetransmitProbe())
        self._stacks = StackSymbolizer(kallsyms)

    def attach(self, loader: BpfLoader) -> list[ProbeStatus]:
        statuses = super().attach(loader)
        stacks_status = getattr(self.probe, "stacks_status", None)
        if stacks_status is not None:
            statuses.append(stacks_status)
            if stacks_status.attached:
                self._stacks.kallsyms()  # at startup, not inside the first interval with a stack
        return statuses

    def switch_detail(self, on: bool) -> None:
        # The counts never stop; only the stack walks do.
        self.probe.pause_stacks(not on)

    def read(self, frame: SnapshotFrame):
        # The capture's last read gives each key's pending events to its last stack.
        return self.probe.read(flush=frame.final)

    def write_interval(self, frame: SnapshotFrame, previous: RetransmitCounts | None,
                       counts: RetransmitCounts) -> None:
        netns_delta = counter_deltas(previous.netns if previous else None,
                                     previous.per_netns if previous else None,
                                     counts.netns, counts.per_netns)
        for inode, delta in zip(counts.netns["netns_inode"], netns_delta):
            if delta["retransmits"] > 0:
                frame.pod(int(inode), retransmits=int(delta["retransmits"]),
                          retransmitted_segments=int(delta["segments"]))

        flow_delta = counter_deltas(previous.flows if previous else None,
                                    previous.per_flow if previous else None,
                                    counts.flows, counts.per_flow)
        for index in np.flatnonzero(flow_delta["retransmits"] > 0):
            key = counts.flows[index]
            family = int(key["family"])
            flow = FlowKey(
                netns=int(key["netns_inode"]),
                family=family,
                saddr=format_address(family, key["saddr"]),
                sport=int(key["sport"]),
                daddr=format_address(family, key["daddr"]),
                dport=int(key["dport"]),
            )
            frame.flows.append(FlowRetransmits(
                pod=frame.label(flow.netns),
                flow=flow,
                state=TCP_STATES.get(int(key["state"]), str(int(key["state"]))),
                retransmits=int(flow_delta["retransmits"][index]),
                segments=int(flow_delta["segments"][index]),
            ))
        lost_now = counts.netns_map_full - (previous.netns_map_full if previous else 0)
        frame.lost["retransmits_by_netns"] += lost_now
        self._write_stacks(frame, previous, counts)

    def _write_stacks(self, frame: SnapshotFrame, previous: RetransmitCounts | None,
                      counts: RetransmitCounts) -> None:
        write_stack_samples(frame, previous, counts, "retransmit",
                            reason_of=lambda key: RETRANSMIT_STACK_REASON,
                            frames_of=self._stacks.frames)
