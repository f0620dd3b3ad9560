"""Softirq probe and source: vector mask, log2 buckets, per-CPU decoding, interval deltas."""
from __future__ import annotations

import ctypes

import numpy as np
import pytest

from profiler.errors import NetprofError
from profiler.probes.softirq import (
    ARRAY_INDEX, BUCKET, LOG2_SLOTS, TIMESTAMPS, VECTOR_STATS, SoftirqCounts, SoftirqProbe,
    histogram_bounds_ns, log2_slots, per_cpu_rows, traced_vector_mask, trimmed,
)
from profiler.snapshot import SnapshotFrame, SoftirqVector
from profiler.sources.softirq import SoftirqSource, softirq_deltas

# This kernel's numbering, and a made-up one where every vector moved: the mask must come
# from the names, never from numbers written in the code.
VECTORS_618 = {0: "HI", 1: "TIMER", 2: "NET_TX", 3: "NET_RX", 4: "BLOCK", 5: "IRQ_POLL",
               6: "TASKLET", 7: "SCHED", 8: "HRTIMER", 9: "RCU"}
VECTORS_SHUFFLED = {0: "TIMER", 1: "NET_RX", 2: "HI", 3: "SCHED", 4: "NET_TX"}


def test_mask_follows_the_kernels_numbering():
    assert traced_vector_mask(VECTORS_618, ("NET_RX", "NET_TX")) == (0b1100, {2: "NET_TX", 3: "NET_RX"})
    assert traced_vector_mask(VECTORS_SHUFFLED, ("NET_RX", "NET_TX")) == (0b10010, {1: "NET_RX", 4: "NET_TX"})


def test_mask_names_a_vector_the_kernel_lacks():
    with pytest.raises(NetprofError, match="BLOCK_IOPOLL.*it has: .*NET_RX"):
        traced_vector_mask(VECTORS_618, ("NET_RX", "BLOCK_IOPOLL"))


def test_log2_slots_bucket_i_holds_2_to_the_i_up_to_2_to_the_i_plus_1():
    values = np.array([0, 1, 2, 3, 4, 7, 8, 1023, 1024, 1025, (1 << 31) - 1, 1 << 31, 1 << 40,
                       (1 << 64) - 1], dtype=np.uint64)
    assert log2_slots(values).tolist() == [0, 0, 1, 1, 2, 2, 3, 9, 10, 10, 30, 31, 31, 31]


def test_log2_slots_exact_at_every_power_of_two_edge():
    # float64 log2 rounds 2^53+ - 1 up; the mirror must use exact integer math like the C.
    for exponent in range(1, 64):
        edge = np.array([(1 << exponent) - 1, 1 << exponent], dtype=np.uint64)
        assert log2_slots(edge, slots=64).tolist() == [exponent - 1, exponent]


def test_histogram_bounds_bracket_the_true_total():
    rng = np.random.default_rng(7)
    values = rng.integers(1, 1 << 20, size=500, dtype=np.uint64)
    histogram = np.bincount(log2_slots(values), minlength=LOG2_SLOTS)
    low, high = histogram_bounds_ns(histogram)
    assert low <= int(values.sum()) < high
    assert histogram.sum() == len(values)


def test_histogram_bounds_open_ended_last_bucket():
    histogram = [0] * LOG2_SLOTS
    histogram[LOG2_SLOTS - 1] = 1
    assert histogram_bounds_ns(histogram) == (1 << (LOG2_SLOTS - 1), None)
    assert histogram_bounds_ns(()) == (0, 0)


def test_trimmed_drops_trailing_empty_buckets_only():
    assert trimmed(np.array([0, 2, 0, 5, 0, 0], np.uint64)) == (0, 2, 0, 5)
    assert trimmed(np.zeros(LOG2_SLOTS, np.uint64)) == ()


def test_per_cpu_rows_places_values_by_index_not_by_read_order():
    keys = np.array([(3,), (0,), (1,)], dtype=ARRAY_INDEX)
    values = np.zeros((3, 2), dtype=VECTOR_STATS)   # (entries, cpus) as MapReader returns
    values["count"] = [[30, 31], [0, 1], [10, 11]]
    rows = per_cpu_rows(keys, values, entries=4)
    assert rows.shape == (2, 4)
    assert rows["count"].tolist() == [[0, 10, 0, 30], [1, 11, 0, 31]]


def counts(cpus: int = 2, **arrays: np.ndarray) -> SoftirqCounts:
    shape = (cpus, len(VECTORS_618))
    hist_shape = (*shape, LOG2_SLOTS)
    fields = {
        "count": np.zeros(shape, np.uint64), "time_ns": np.zeros(shape, np.uint64),
        "exits_without_entry": np.zeros(shape, np.uint64), "queue_delay_ns": np.zeros(shape, np.uint64),
        "run_time_log2": np.zeros(hist_shape, np.uint64), "queue_delay_log2": np.zeros(hist_shape, np.uint64),
    }
    fields.update(arrays)
    return SoftirqCounts(cpus=np.arange(cpus), vectors={2: "NET_TX", 3: "NET_RX"}, **fields)


def net_rx_on_cpu1(runs: int, run_ns: int, queue_ns: int) -> SoftirqCounts:
    c = counts()
    c.count[1, 3] = runs
    c.time_ns[1, 3] = runs * run_ns
    c.run_time_log2[1, 3, log2_slots(np.array([run_ns]))[0]] = runs
    c.queue_delay_log2[1, 3, log2_slots(np.array([queue_ns]))[0]] = runs
    c.queue_delay_ns[1, 3] = runs * queue_ns
    return c


def test_first_interval_reports_everything_since_attach():
    deltas = softirq_deltas(None, net_rx_on_cpu1(runs=10, run_ns=5000, queue_ns=300))
    assert list(deltas) == [1]
    vector = deltas[1]["NET_RX"]
    assert vector.count == 10 and vector.time_ns == 50_000
    assert sum(vector.latency_log2_ns) == 10 and len(vector.latency_log2_ns) == 13  # 5000 ns: bucket 12
    assert vector.queue_delay_log2_ns[8] == 10   # 300 ns: [256, 512)
    assert vector.queue_delay_ns == 3000, "the kernel's sum of the delays, beside their histogram"


def test_later_intervals_are_differences_and_quiet_vectors_are_left_out():
    before = net_rx_on_cpu1(runs=10, run_ns=5000, queue_ns=300)
    after = net_rx_on_cpu1(runs=25, run_ns=5000, queue_ns=300)
    deltas = softirq_deltas(before, after)
    assert deltas == {1: {"NET_RX": SoftirqVector(15, 75_000, (0,) * 12 + (15,), (0,) * 8 + (15,), 4500)}}
    assert softirq_deltas(after, after) == {}


def test_a_run_raised_before_attach_has_no_queue_delay():
    after = counts()
    after.count[0, 2] = 1
    after.time_ns[0, 2] = 20
    after.run_time_log2[0, 2, 4] = 1
    assert softirq_deltas(None, after) == {0: {"NET_TX": SoftirqVector(1, 20, (0, 0, 0, 0, 1), ())}}


class FakeProbe:
    name = "softirq"

    def __init__(self, reads: list[SoftirqCounts]):
        self.reads = reads

    def attach(self, loader):
        from profiler.probes.base import ProbeStatus
        return ProbeStatus(self.name, True, "fake")

    def read(self) -> SoftirqCounts:
        return self.reads.pop(0)

    def detach(self) -> None:
        pass


def test_source_writes_each_cpus_vectors_into_the_frame():
    source = SoftirqSource(FakeProbe([net_rx_on_cpu1(4, 1000, 100), net_rx_on_cpu1(6, 1000, 100)]))
    source.attach(loader=None)
    frames = []
    for _ in range(2):
        frame = SnapshotFrame(0.0, label=str)
        source.collect(frame)
        frames.append(frame.freeze(1.0))
    assert [c.cpu for c in frames[0].cpus] == [1]
    assert frames[0].cpus[0].softirq["NET_RX"].count == 4
    assert frames[1].cpus[0].softirq["NET_RX"].count == 2


def test_c_structs_match_the_numpy_dtypes(loader):
    probe = SoftirqProbe()
    status = probe.attach(loader)
    assert status.attached, status.error
    try:
        bpf = probe._bpf
        for table, key, value in ((b"softirq_stats", ARRAY_INDEX, VECTOR_STATS),
                                  (b"softirq_timestamps", ARRAY_INDEX, TIMESTAMPS),
                                  (b"softirq_run_time_log2", ARRAY_INDEX, BUCKET),
                                  (b"softirq_queue_delay_log2", ARRAY_INDEX, BUCKET)):
            t = bpf[table]
            assert ctypes.sizeof(t.Key) == key.itemsize, table
            assert ctypes.sizeof(t.sLeaf) == value.itemsize, table
            if value.names != ("count",):   # a struct: the same fields at the same offsets
                fields = [(name, getattr(t.sLeaf, name).offset) for name, _ in t.sLeaf._fields_]
                assert fields == [(name, value.fields[name][1]) for name in value.names], table
        nr_vectors = max(loader.layout.softirq_vectors) + 1
        assert bpf[b"softirq_stats"].max_entries == nr_vectors
        assert bpf[b"softirq_run_time_log2"].max_entries == nr_vectors * LOG2_SLOTS
        read = probe.read()
        assert read.count.shape == (len(read.cpus), nr_vectors)
        assert read.run_time_log2.shape == (len(read.cpus), nr_vectors, LOG2_SLOTS)
        untraced = [v for v in range(nr_vectors) if v not in read.vectors]
        assert not read.count[:, untraced].any()   # TIMER, RCU, ... fire all the time
    finally:
        probe.detach()
