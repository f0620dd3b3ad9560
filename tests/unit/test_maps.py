import pytest
import numpy as np

from profiler.kernel.maps import counter_deltas
from profiler.probes.retransmits import FLOW_KEY

KEY = np.dtype([("netns", "<u4"), ("port", "<u2"), ("pad", "<u2")])


def keys(*rows: tuple) -> np.ndarray:
    return np.array(list(rows), dtype=KEY)


def test_first_read_is_the_delta():
    d = counter_deltas(None, None, keys((1, 80, 0), (2, 80, 0)), np.array([5, 7], np.uint64))
    assert d.tolist() == [5, 7]


def test_deltas_match_keys_not_positions():
    prev = keys((1, 80, 0), (2, 80, 0), (3, 443, 0))
    now = keys((3, 443, 0), (9, 22, 0), (1, 80, 0))
    d = counter_deltas(prev, np.array([5, 7, 10], np.uint64), now, np.array([12, 4, 5], np.uint64))
    assert d.tolist() == [2, 4, 0]


def test_counter_that_went_down_counts_from_zero():
    # An LRU map evicted the key and it came back with a fresh count.
    d = counter_deltas(keys((1, 80, 0)), np.array([100], np.uint64), keys((1, 80, 0)), np.array([3], np.uint64))
    assert d.tolist() == [3]


def test_structured_flow_keys_with_arrays():
    prev = np.zeros(2, FLOW_KEY)
    prev["netns_inode"] = [10, 11]
    prev["saddr"][1, :4] = [198, 18, 0, 3]
    now = prev[::-1].copy()
    d = counter_deltas(prev, np.array([1, 2], np.uint64), now, np.array([5, 5], np.uint64))
    assert d.tolist() == [3, 4]


def test_structured_counters_reset_together():
    counts = np.dtype([("retransmits", "<u8"), ("segments", "<u8")])
    prev = np.array([(10, 30), (5, 5)], counts)
    now = np.array([(12, 35), (1, 2)], counts)   # second key re-created by the LRU
    d = counter_deltas(keys((1, 80, 0), (2, 80, 0)), prev, keys((1, 80, 0), (2, 80, 0)), now)
    assert d["retransmits"].tolist() == [2, 1]
    assert d["segments"].tolist() == [5, 2]


def test_previous_read_was_an_empty_map():
    counts = np.dtype([("retransmits", "<u8"), ("segments", "<u8")])
    d = counter_deltas(keys(), np.zeros(0, counts), keys((1, 80, 0)), np.array([(3, 4)], counts))
    assert d["retransmits"].tolist() == [3] and d["segments"].tolist() == [4]
    plain = counter_deltas(keys(), np.zeros(0, np.uint64), keys((1, 80, 0)), np.array([9], np.uint64))
    assert plain.tolist() == [9]


def test_a_kernel_without_batch_lookup_falls_back_to_iteration(monkeypatch):
    # Debian 11's 5.10 answers BPF_MAP_LOOKUP_BATCH with the kernel-internal ENOTSUPP (524),
    # which no userspace errno names: it ended the capture with an internal error.
    import ctypes

    pytest.importorskip("bcc")
    from bcc import libbcc

    from profiler.kernel import maps

    class Table:
        Key = ctypes.c_uint32
        Leaf = ctypes.c_uint64
        max_entries = 8
        map_fd = -1

        def items(self):
            return [(ctypes.c_uint32(3), ctypes.c_uint64(30)), (ctypes.c_uint32(5), ctypes.c_uint64(50))]

    calls = []

    def refuse(*args):
        calls.append(args)
        return -maps.KERNEL_ENOTSUPP

    monkeypatch.setattr(libbcc.lib, "bpf_lookup_batch", refuse)
    reader = maps.MapReader(Table(), maps.MapLayout(np.dtype([("k", "<u4")]), np.dtype([("v", "<u8")])))
    for _ in range(2):
        keys, values = reader.read()
        assert keys["k"].tolist() == [3, 5] and values["v"].tolist() == [30, 50]
    assert len(calls) == 1  # asked once; the map's answer is remembered


def test_iterating_a_per_cpu_map_decodes_integer_leaves(monkeypatch):
    # BCC gives a per-CPU u64 array's values as Python ints, one per CPU: the fallback wrote
    # bytes(n), n zero bytes, and 5.10 ended every capture with a numpy broadcast error.
    import ctypes

    pytest.importorskip("bcc")
    from bcc import libbcc

    from profiler.kernel import maps

    class PerCpuTable:
        Key = ctypes.c_int
        Leaf = ctypes.c_uint64 * 2
        sLeaf = ctypes.c_uint64
        max_entries = 3
        map_fd = -1

        def items(self):
            return [(ctypes.c_int(0), [289, 7]), (ctypes.c_int(1), [0, 1 << 40]), (ctypes.c_int(2), [0, 0])]

    monkeypatch.setattr(libbcc.lib, "bpf_lookup_batch", lambda *args: -maps.KERNEL_ENOTSUPP)
    monkeypatch.setattr(maps, "possible_cpus", lambda: 2)
    reader = maps.MapReader(PerCpuTable(), maps.MapLayout(np.dtype([("slot", "<u4")]), np.dtype([("count", "<u8")]),
                                                          percpu=True))
    keys, values = reader.read()
    assert keys["slot"].tolist() == [0, 1, 2]
    assert values["count"].tolist() == [[289, 7], [0, 1 << 40], [0, 0]]

