"""NAPI probe and source: device names, per-CPU flattening, deltas, device labels."""
from __future__ import annotations

import ctypes

import numpy as np

from profiler.probes.napi import (
    BACKLOG_DEVICE, COUNT, CPU_DEVICE_KEY, DEVICE_KEY, NAPI_COUNTS, SLOT_KEY, NapiCounts, NapiProbe,
    device_name, flatten_per_cpu,
)
from profiler.snapshot import NapiDevice, SnapshotFrame
from profiler.sources.napi import NapiSource, device_label, napi_deltas

HOST_NETNS = 4026531840
POD_NETNS = 4026532500


def labels(inode: int) -> str:
    return {HOST_NETNS: "host", POD_NETNS: "shop/web-1"}.get(inode, f"netns:{inode}")


def test_device_name_stops_at_nul_and_never_trusts_the_bytes():
    assert device_name(b"eth0\0\0\0\0\0\0\0\0\0\0\0\0") == "eth0"
    assert device_name(b"(no_device)\0junk") == BACKLOG_DEVICE
    assert device_name(b"ev\x1b[2Jil\xff") == "ev?[2Jil\ufffd"


def test_device_label_names_the_pod_for_devices_inside_one():
    assert device_label("eth0", POD_NETNS, labels) == "eth0@shop/web-1"
    assert device_label("ens5", HOST_NETNS, labels) == "ens5"
    assert device_label(BACKLOG_DEVICE, 0, labels) == BACKLOG_DEVICE


def per_cpu_map(rows: list[tuple[int, bytes, list[tuple[int, int, int]]]]) -> tuple[np.ndarray, np.ndarray]:
    keys = np.array([(netns, name) for netns, name, _ in rows], dtype=DEVICE_KEY)
    values = np.array([per_cpu for _, _, per_cpu in rows], dtype=NAPI_COUNTS).reshape(len(rows), -1)
    return keys, values


def test_flatten_keeps_one_row_per_cpu_that_polled():
    keys, values = per_cpu_map([
        (0, b"(no_device)", [(10, 300, 2), (0, 0, 0)]),
        (HOST_NETNS, b"ens5", [(1, 64, 1), (7, 20, 0)]),
    ])
    devices, counts = flatten_per_cpu(keys, values, np.array([0, 1], np.uint32))
    assert devices.dtype == CPU_DEVICE_KEY
    assert [(int(d["cpu"]), bytes(d["name"])) for d in devices] == [(0, b"(no_device)"), (0, b"ens5"), (1, b"ens5")]
    assert counts["polls"].tolist() == [10, 1, 7]


def test_flatten_empty_map():
    keys, values = np.zeros(0, DEVICE_KEY), np.zeros((0, 2), NAPI_COUNTS)
    devices, counts = flatten_per_cpu(keys, values, np.array([0, 1], np.uint32))
    assert len(devices) == 0 and len(counts) == 0


def napi_counts(rows: list[tuple[int, int, bytes, tuple[int, int, int]]], map_full: int = 0) -> NapiCounts:
    devices = np.array([(cpu, netns, name) for cpu, netns, name, _ in rows], dtype=CPU_DEVICE_KEY)
    counts = np.array([c for *_, c in rows], dtype=NAPI_COUNTS)
    return NapiCounts(devices, counts, map_full)


def test_deltas_per_cpu_with_pod_devices_kept_apart():
    before = napi_counts([(1, 0, b"(no_device)", (10, 100, 0)), (1, POD_NETNS, b"eth0", (5, 5, 0))])
    after = napi_counts([
        (1, 0, b"(no_device)", (15, 420, 3)),
        (1, POD_NETNS, b"eth0", (5, 5, 0)),            # idle this interval: left out
        (1, POD_NETNS + 1, b"eth0", (2, 128, 2)),      # another pod's eth0 is another device
        (0, HOST_NETNS, b"ens5", (1, 1, 0)),
    ])
    deltas = napi_deltas(before, after, labels)
    assert deltas == {
        0: (NapiDevice("ens5", 1, 1, 0),),
        1: (NapiDevice(BACKLOG_DEVICE, 5, 320, 3), NapiDevice(f"eth0@netns:{POD_NETNS + 1}", 2, 128, 2)),
    }


def test_source_counts_polls_lost_to_a_full_map():
    class Probe:
        name = "napi"

        def __init__(self):
            self.reads = [napi_counts([(0, 0, b"(no_device)", (1, 1, 0))], map_full=2),
                          napi_counts([(0, 0, b"(no_device)", (3, 9, 0))], map_full=5)]

        def attach(self, loader):
            from profiler.probes.base import ProbeStatus
            return ProbeStatus(self.name, True, "fake")

        def read(self):
            return self.reads.pop(0)

        def detach(self):
            pass

    source = NapiSource(Probe())
    source.attach(None)
    snapshots = []
    for _ in range(2):
        frame = SnapshotFrame(0.0, label=labels)
        source.collect(frame)
        snapshots.append(frame.freeze(1.0))
    assert snapshots[0].cpus[0].napi == (NapiDevice(BACKLOG_DEVICE, 1, 1, 0),)
    assert snapshots[1].cpus[0].napi == (NapiDevice(BACKLOG_DEVICE, 2, 8, 0),)
    assert [dict(s.lost) for s in snapshots] == [{"napi_by_device": 2}, {"napi_by_device": 3}]


def test_c_structs_match_the_numpy_dtypes(loader):
    probe = NapiProbe()
    status = probe.attach(loader)
    assert status.attached, status.error
    try:
        for table, key, value in ((b"napi_by_device", DEVICE_KEY, NAPI_COUNTS), (b"napi_map_full", SLOT_KEY, COUNT)):
            t = probe._bpf[table]
            assert ctypes.sizeof(t.Key) == key.itemsize, table
            assert ctypes.sizeof(t.sLeaf) == value.itemsize, table
        assert isinstance(probe.read(), NapiCounts)
    finally:
        probe.detach()
