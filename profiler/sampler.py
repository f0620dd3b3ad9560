"""Reads every probe once per interval and turns cumulative kernel counters into snapshots."""
from __future__ import annotations

import time

import numpy as np

from .kernel.loader import BpfLoader
from .kernel.maps import counter_deltas
from .pods import PodDirectory
from .probes.base import ProbeStatus
from .probes.retransmits import TCP_STATES, RetransmitCounts, RetransmitProbe, format_address
from .snapshot import FlowKey, FlowRetransmits, PodInterval, Snapshot


class Sampler:
    def __init__(self, pods: PodDirectory, retransmits: RetransmitProbe | None = None):
        self.pods = pods
        self.retransmits = retransmits or RetransmitProbe()
        self.statuses: list[ProbeStatus] = []
        self._previous: RetransmitCounts | None = None
        self._last_read_s: float | None = None

    def attach(self, loader: BpfLoader) -> list[ProbeStatus]:
        self.statuses = [self.retransmits.attach(loader)]
        self._last_read_s = time.monotonic()
        return self.statuses

    @property
    def any_attached(self) -> bool:
        return any(status.attached for status in self.statuses)

    def sample(self) -> Snapshot:
        """Counters since the previous call (or since attach)."""
        started = self._last_read_s if self._last_read_s is not None else time.monotonic()
        counts = self.retransmits.read()
        ended = time.monotonic()
        self._last_read_s = ended
        previous = self._previous
        self._previous = counts

        netns_delta = counter_deltas(
            previous.netns if previous else None,
            previous.per_netns if previous else None,
            counts.netns,
            counts.per_netns,
        )
        pods = tuple(
            PodInterval(pod=self.pods.label(int(inode)), netns=int(inode),
                        retransmits=int(delta["retransmits"]),
                        retransmitted_segments=int(delta["segments"]))
            for inode, delta in zip(counts.netns["netns_inode"], netns_delta)
            if delta["retransmits"] > 0
        )
        flow_delta = counter_deltas(
            previous.flows if previous else None,
            previous.per_flow if previous else None,
            counts.flows,
            counts.per_flow,
        )
        flows = []
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
            flows.append(
                FlowRetransmits(
                    pod=self.pods.label(flow.netns),
                    flow=flow,
                    state=TCP_STATES.get(int(key["state"]), str(int(key["state"]))),
                    retransmits=int(flow_delta["retransmits"][index]),
                    segments=int(flow_delta["segments"][index]),
                )
            )
        lost_now = counts.netns_map_full - (previous.netns_map_full if previous else 0)
        lost = {"retransmits_by_netns": lost_now} if lost_now > 0 else {}
        return Snapshot(started, ended, pods, tuple(flows), lost)

    def detach(self) -> None:
        self.retransmits.detach()
