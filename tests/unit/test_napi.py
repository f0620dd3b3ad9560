"""NAPI probe and source: device names, per-CPU flattening, deltas, device labels."""
from __future__ import annotations

import ctypes

import numpy as np

from profiler.probes.napi import (
    BACKLOG_DEVICE, COUNT, CPU_DEVICE_KEY, DEVICE_KEY, DEVICE_SLOT, NAPI_COUNTS, SLOT_KEY, NapiCounts, NapiProbe,
    device_name, rows_by_slot,
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


def slot_maps(devices: list[tuple[int, bytes, list[int]]], by_slot: list[list[tuple[int, int, int]]]):
    """devices: (netns, name, each CPU's slot + 1); by_slot: each slot's counts on each CPU."""
    keys = np.array([(netns, name) for netns, name, _ in devices], dtype=DEVICE_KEY)
    slots = np.zeros((len(devices), 2), dtype=DEVICE_SLOT)
    for row, (_, _, per_cpu) in enumerate(devices):
        slots["slot_plus_one"][row] = per_cpu
    counts = np.array(by_slot, dtype=NAPI_COUNTS).reshape(len(by_slot), 2)
    return keys, slots, counts


def test_each_cpu_counts_a_device_at_its_own_slot():
    # CPU 0 polled the backlog first (slot 0) then ens5 (slot 1); CPU 1 only ens5 (its slot 0).
    keys, slots, counts = slot_maps(
        [(0, b"(no_device)", [1, 0]), (HOST_NETNS, b"ens5", [2, 1])],
        [[(10, 300, 2), (7, 20, 0)],
         [(1, 64, 1), (0, 0, 0)]])
    devices, polled = rows_by_slot(keys, slots, counts, np.array([0, 1], np.uint32))
    assert devices.dtype == CPU_DEVICE_KEY
    assert [(int(d["cpu"]), bytes(d["name"])) for d in devices] == [(0, b"(no_device)"), (0, b"ens5"), (1, b"ens5")]
    assert polled["polls"].tolist() == [10, 1, 7]
    assert polled["packets"].tolist() == [300, 64, 20]


def test_a_slot_given_out_after_the_counts_were_read_waits_for_the_next_read():
    keys, slots, counts = slot_maps([(0, b"(no_device)", [1, 0]), (HOST_NETNS, b"ens5", [2, 0])],
                                    [[(10, 300, 2), (0, 0, 0)]])
    devices, polled = rows_by_slot(keys, slots, counts, np.array([0, 1], np.uint32))
    assert [bytes(d["name"]) for d in devices] == [b"(no_device)"] and polled["polls"].tolist() == [10]


def test_no_devices_yet():
    keys, slots = np.zeros(0, DEVICE_KEY), np.zeros((0, 2), DEVICE_SLOT)
    devices, polled = rows_by_slot(keys, slots, np.zeros((0, 2), NAPI_COUNTS), np.array([0, 1], np.uint32))
    assert len(devices) == 0 and len(polled) == 0


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
        for table, key, value in ((b"napi_slot_of_device", DEVICE_KEY, DEVICE_SLOT),
                                  (b"napi_counts_by_slot", SLOT_KEY, NAPI_COUNTS),
                                  (b"napi_slots_used", SLOT_KEY, COUNT), (b"napi_map_full", SLOT_KEY, COUNT)):
            t = probe._bpf[table]
            assert ctypes.sizeof(t.Key) == key.itemsize, table
            assert ctypes.sizeof(t.sLeaf) == value.itemsize, table
        assert isinstance(probe.read(), NapiCounts)
    finally:
        probe.detach()


def test_the_counts_array_is_read_only_as_far_as_asked(loader):
    """MapReader.read(limit): the first `limit` slots of every CPU, with their values."""
    from profiler.kernel.maps import MapLayout, MapReader

    probe = NapiProbe()
    status = probe.attach(loader)
    assert status.attached, status.error
    try:
        table = probe._bpf[b"napi_counts_by_slot"]
        cpus = len(probe._cpus)
        for slot in range(5):
            per_cpu = table.Leaf(*[table.sLeaf(slot + 1, 100 * cpu + slot, 0) for cpu in range(cpus)])
            table[table.Key(slot)] = per_cpu
        reader = MapReader(table, MapLayout(SLOT_KEY, NAPI_COUNTS, percpu=True))
        keys, values = reader.read(limit=3)
        assert keys["index"].tolist() == [0, 1, 2] and values.shape == (3, cpus)
        assert values["polls"][:, 0].tolist() == [1, 2, 3]
        assert values["packets"][2].tolist() == [100 * cpu + 2 for cpu in range(cpus)]
        keys, values = reader.read(limit=0)
        assert len(keys) == 0 and values.shape == (0, cpus)
        assert len(reader.read()[0]) == table.max_entries
    finally:
        probe.detach()
