"""Softirq run time and queueing delay per CPU and per vector (bpf/softirq.bpf.c)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

from ..errors import NetprofError
from ..kernel.loader import BpfLoader
from ..kernel.log2_histogram import LOG2_SLOTS
from ..kernel.maps import MapLayout, MapReader
from ..snapshot import QUEUE_DELAY_SAMPLE_EVERY
from .base import ParkableProbe, ProbeStatus, TracepointParking

# Raw tracepoints (bpf/softirq.bpf.c says why): the events of irq:softirq_*.
RAW_TRACEPOINTS = ("softirq_raise", "softirq_entry", "softirq_exit")
# The vectors netprof is about. Others (TIMER, SCHED, RCU, ...) can be asked for by name;
# by default they cost one compare per event in the kernel and are not counted.
DEFAULT_VECTORS = ("NET_RX", "NET_TX")
ARRAY_INDEX = np.dtype([("index", "<u4")])
# Mirrors struct softirq_vector_stats in bpf/softirq.h.
VECTOR_STATS = np.dtype([("count", "<u8"), ("time_ns", "<u8"), ("exits_without_entry", "<u8"),
                         ("queue_delay_ns", "<u8")])
# Mirrors struct softirq_timestamps (read only by the layout test; Python has no use for it).
TIMESTAMPS = np.dtype([("entry_ns", "<u8"), ("entry_raise_ns", "<u8"), ("raise_ns", "<u8"),
                       ("runs_until_delay_sample", "<u8")])
BUCKET = np.dtype([("count", "<u8")])


@dataclass(frozen=True)
class SoftirqCounts:
    """Cumulative counts since attach. Row i of every array is CPU `cpus[i]`; column v of
    the per-vector arrays is vector number v (only `vectors` are ever non-zero)."""

    cpus: np.ndarray                 # CPU ids, one per row
    vectors: Mapping[int, str]       # traced vector number → name (NET_RX, ...)
    count: np.ndarray                # (cpus, nr_vectors) uint64: handler runs
    time_ns: np.ndarray              # (cpus, nr_vectors) uint64: their total run time
    exits_without_entry: np.ndarray  # (cpus, nr_vectors) uint64: runs under way at attach
    run_time_log2: np.ndarray        # (cpus, nr_vectors, LOG2_SLOTS) uint64
    queue_delay_log2: np.ndarray     # (cpus, nr_vectors, LOG2_SLOTS) uint64
    queue_delay_ns: np.ndarray       # (cpus, nr_vectors) uint64: sum of the delays in queue_delay_log2


def traced_vector_mask(vectors: Mapping[int, str], names: Iterable[str]) -> tuple[int, dict[int, str]]:
    """The -D mask for `names` given this kernel's vector numbering (from BTF)."""
    by_name = {name: number for number, name in vectors.items()}
    missing = [name for name in names if name not in by_name]
    if missing:
        known = ", ".join(sorted(by_name)) or "none"
        raise NetprofError(f"softirq vector(s) {', '.join(missing)} not in this kernel (it has: {known})")
    traced = {by_name[name]: name for name in names}
    mask = 0
    for number in traced:
        mask |= 1 << number
    return mask, dict(sorted(traced.items()))


def log2_slots(values_ns: np.ndarray, slots: int = LOG2_SLOTS) -> np.ndarray:
    """The bucket the BPF program puts each value in (a mirror of log2_slot() in C)."""
    values = np.asarray(values_ns, dtype=np.uint64)
    exponent = np.zeros(values.shape, dtype=np.int64)
    nonzero = values > 0
    # Exact integer floor(log2): float64 rounds large values up to the next power of two.
    exponent[nonzero] = np.array([int(v).bit_length() - 1 for v in values[nonzero].ravel()],
                                 dtype=np.int64).reshape(exponent[nonzero].shape)
    return np.minimum(exponent, slots - 1)


def histogram_bounds_ns(histogram: Iterable[int]) -> tuple[int, int | None]:
    """Lowest and highest total the values in a log2 histogram can add up to (the highest is
    None when the open-ended last bucket of a full-width histogram is used)."""
    counts = [int(c) for c in histogram]
    low = sum(count * (1 << slot) for slot, count in enumerate(counts) if slot > 0)
    if len(counts) >= LOG2_SLOTS and counts[LOG2_SLOTS - 1]:
        return low, None
    high = sum(count * (1 << (slot + 1)) for slot, count in enumerate(counts))
    return low, high


def trimmed(histogram: np.ndarray) -> tuple[int, ...]:
    """A histogram as a tuple without its trailing empty buckets."""
    nonzero = np.flatnonzero(histogram)
    if len(nonzero) == 0:
        return ()
    return tuple(int(c) for c in histogram[: nonzero[-1] + 1])


def per_cpu_rows(keys: np.ndarray, values: np.ndarray, entries: int) -> np.ndarray:
    """A per-CPU array map read as (index, cpu) → an array of shape (cpu, entries)."""
    rows = np.zeros((values.shape[1], entries), dtype=values.dtype)
    if len(keys):
        rows[:, keys["index"].astype(np.int64)] = values.T
    return rows


class SoftirqProbe(ParkableProbe):
    name = "softirq"

    def __init__(self, vectors: Iterable[str] = DEFAULT_VECTORS) -> None:
        self.vector_names = tuple(vectors)
        self._bpf = None
        self._readers: dict[str, MapReader] = {}
        self._traced: dict[int, str] = {}
        self._nr_vectors = 0
        self._cpus = np.zeros(0, dtype=np.int64)
        self._parking: TracepointParking | None = None

    @property
    def via(self) -> str:
        return "raw_tracepoint:" + ",".join(RAW_TRACEPOINTS)

    def attach(self, loader: BpfLoader) -> ProbeStatus:
        vectors = loader.layout.softirq_vectors
        try:
            mask, traced = traced_vector_mask(vectors, self.vector_names)
            nr_vectors = max(vectors) + 1
            self._bpf = loader.compile("softirq", [
                f"-DNETPROF_NR_SOFTIRQS={nr_vectors}",
                f"-DNETPROF_SOFTIRQ_TRACED_MASK={mask:#x}ULL",
                f"-DNETPROF_LOG2_SLOTS={LOG2_SLOTS}",
                f"-DNETPROF_QUEUE_DELAY_SAMPLE_EVERY={QUEUE_DELAY_SAMPLE_EVERY}",
            ])
        except NetprofError as exc:
            return ProbeStatus(self.name, False, self.via, str(exc))
        self._traced = traced
        self._nr_vectors = nr_vectors
        from bcc.utils import get_possible_cpus

        self._cpus = np.array(get_possible_cpus(), dtype=np.int64)
        self._readers = {
            "stats": MapReader(self._bpf[b"softirq_stats"], MapLayout(ARRAY_INDEX, VECTOR_STATS, percpu=True)),
            "run_time": MapReader(self._bpf[b"softirq_run_time_log2"], MapLayout(ARRAY_INDEX, BUCKET, percpu=True)),
            "queue_delay": MapReader(self._bpf[b"softirq_queue_delay_log2"], MapLayout(ARRAY_INDEX, BUCKET, percpu=True)),
        }
        # The timestamps are forgotten on unpark: a run entered before the park and left while
        # parked would otherwise be timed across the whole pause. Nothing writes them while
        # parked, and an exit whose entry is unseen is counted as exits_without_entry, as at
        # the first attach.
        self._parking = TracepointParking(self._bpf, (), loader.tracepoints_problem,
                                          forget=(b"softirq_timestamps",), raw_tracepoints=RAW_TRACEPOINTS)
        return ProbeStatus(self.name, True, self.via)

    def read(self) -> SoftirqCounts:
        if self._bpf is None:
            raise RuntimeError("read() before a successful attach()")
        stats = per_cpu_rows(*self._readers["stats"].read(), self._nr_vectors)
        shape = (len(self._cpus), self._nr_vectors, LOG2_SLOTS)
        run_time = per_cpu_rows(*self._readers["run_time"].read(), self._nr_vectors * LOG2_SLOTS)
        queue_delay = per_cpu_rows(*self._readers["queue_delay"].read(), self._nr_vectors * LOG2_SLOTS)
        return SoftirqCounts(
            cpus=self._cpus.copy(),
            vectors=dict(self._traced),
            count=stats["count"].copy(),
            time_ns=stats["time_ns"].copy(),
            exits_without_entry=stats["exits_without_entry"].copy(),
            run_time_log2=run_time["count"].reshape(shape),
            queue_delay_log2=queue_delay["count"].reshape(shape),
            queue_delay_ns=stats["queue_delay_ns"].copy(),
        )

    def detach(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None
        self._readers = {}
        self._parking = None
