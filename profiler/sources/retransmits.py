from __future__ import annotations

import numpy as np

from ..kernel.maps import counter_deltas
from ..probes.retransmits import TCP_STATES, RetransmitCounts, RetransmitProbe, format_address
from ..snapshot import FlowKey, FlowRetransmits, SnapshotFrame
from .base import ProbeSource


class RetransmitSource(ProbeSource[RetransmitCounts]):
    name = "retransmits"

    def __init__(self, probe: RetransmitProbe | None = None):
        super().__init__(probe or RetransmitProbe())

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
