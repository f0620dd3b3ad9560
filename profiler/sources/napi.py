"""NAPI polls per CPU and device: which device's packets each CPU processed, and how often a
poll ran out of budget."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import numpy as np

from ..kernel.maps import counter_deltas
from ..netns_names import HOST_LABEL
from ..probes.napi import NapiCounts, NapiProbe, device_name
from ..snapshot import NapiDevice, SnapshotFrame
from .base import ParkingSource


def device_label(name: str, netns_inode: int, label: Callable[[int], str]) -> str:
    """The device as an operator names it: "eth0" on the node, "eth0@<pod>" inside a pod
    (every pod has an eth0), "(no_device)" for the per-CPU backlog (no netns)."""
    if netns_inode == 0:
        return name
    pod = label(netns_inode)
    return name if pod == HOST_LABEL else f"{name}@{pod}"


def napi_deltas(previous: NapiCounts | None, counts: NapiCounts,
                label: Callable[[int], str]) -> dict[int, tuple[NapiDevice, ...]]:
    """CPU → the devices it polled between two reads, busiest first."""
    delta = counter_deltas(previous.devices if previous else None,
                           previous.counts if previous else None,
                           counts.devices, counts.counts)
    per_cpu: dict[int, dict[str, NapiDevice]] = defaultdict(dict)
    for index in np.flatnonzero(delta["polls"] > 0):
        key = counts.devices[index]
        device = device_label(device_name(bytes(key["name"])), int(key["netns_inode"]), label)
        polled = NapiDevice(device, int(delta["polls"][index]), int(delta["packets"][index]),
                            int(delta["budget_exhausted"][index]))
        devices = per_cpu[int(key["cpu"])]
        devices[device] = devices[device].merge(polled) if device in devices else polled
    return {
        cpu: tuple(sorted(devices.values(), key=lambda d: (-d.packets, d.device)))
        for cpu, devices in sorted(per_cpu.items())
    }


class NapiSource(ParkingSource[NapiCounts]):
    name = "napi"

    def __init__(self, probe: NapiProbe | None = None):
        super().__init__(probe or NapiProbe())

    def write_interval(self, frame: SnapshotFrame, previous: NapiCounts | None, counts: NapiCounts) -> None:
        for cpu, devices in napi_deltas(previous, counts, frame.label).items():
            frame.cpu(cpu, napi=devices)
        frame.lost["napi_by_device"] += counts.map_full - (previous.map_full if previous else 0)
