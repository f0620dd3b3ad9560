"""Read whole BPF maps into numpy arrays with one syscall per batch.

BCC's own readers build one ctypes object per entry (and its batch reader aliases its in/out
cursor with the count in 0.26). netprof reads every interval, so it asks the kernel for all
entries at once (BPF_MAP_LOOKUP_BATCH, Linux ≥ 5.6) straight into preallocated numpy
buffers, and decodes with structured dtypes declared next to each probe. Kernels without the
batch command fall back to BCC's per-entry iteration, still decoded into the same arrays.
"""
from __future__ import annotations

import ctypes
import errno
import os
from dataclasses import dataclass

import numpy as np


def possible_cpus() -> int:
    """Number of possible CPUs: the stride of per-CPU map values."""
    from bcc.utils import get_possible_cpus  # imported late: bcc is an optional OS package

    return len(get_possible_cpus())


# The kernel's own ENOTSUPP (524): what a map type without batch operations gives on 5.10;
# it is no userspace errno, so the errno module lacks it.
KERNEL_ENOTSUPP = 524
NO_BATCH_ERRNOS = (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, KERNEL_ENOTSUPP)


@dataclass
class MapLayout:
    key: np.dtype
    value: np.dtype
    percpu: bool = False


class MapReader:
    """Reads one BCC table into (keys, values) numpy arrays.

    For per-CPU maps `values` has shape (n, cpus). The arrays returned are copies: the
    reader's buffers are reused on the next read.
    """

    def __init__(self, table, layout: MapLayout):
        self._table = table
        self._layout = layout
        key_size = ctypes.sizeof(table.Key)
        # BCC's per-CPU tables replace Leaf with an array of one value per CPU (sLeaf is one).
        leaf_size = ctypes.sizeof(getattr(table, "sLeaf", table.Leaf) if layout.percpu else table.Leaf)
        if key_size != layout.key.itemsize:
            raise ValueError(f"key layout mismatch: C {key_size} bytes, numpy {layout.key.itemsize}")
        if leaf_size != layout.value.itemsize:
            raise ValueError(
                f"value layout mismatch: C {leaf_size} bytes, numpy {layout.value.itemsize}"
            )
        self._leaf_size = leaf_size
        self._cpus = possible_cpus() if layout.percpu else 1
        # The kernel lays per-CPU values out at 8-byte strides.
        self._value_stride = (leaf_size + 7) // 8 * 8 if layout.percpu else leaf_size
        self._capacity = int(table.max_entries)
        self._keys = np.zeros(self._capacity, dtype=layout.key)
        self._values = np.zeros(self._capacity * self._cpus * self._value_stride, dtype=np.uint8)
        self._batch_supported = True
        # An array's keys are 0..n-1: without batch lookups (per-CPU arrays on 5.10) each
        # index is one lookup straight into the buffers, where BCC's items() built Python
        # objects per entry and per CPU (≈100 ms for a 320-entry histogram in a 5.10 guest).
        try:
            from bcc.table import ArrayBase
        except ImportError:
            ArrayBase = ()
        self._is_array = isinstance(table, ArrayBase) and layout.key.itemsize == 4

    def read(self, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """At most `limit` entries (an array map's first `limit` indexes): the whole map when
        None."""
        wanted = self._capacity if limit is None else max(0, min(int(limit), self._capacity))
        if wanted == 0:
            return self._keys[:0].copy(), self._empty_values()
        count = self._read_batch(wanted) if self._batch_supported else None
        if count is None:
            self._batch_supported = False
            count = self._read_by_index(wanted) if self._is_array else self._read_iter(wanted)
        keys = self._keys[:count].copy()
        raw = self._values[: count * self._cpus * self._value_stride]
        if self._layout.percpu:
            per_cpu = np.dtype({"names": list(self._layout.value.names),
                                "formats": [self._layout.value.fields[n][0] for n in self._layout.value.names],
                                "offsets": [self._layout.value.fields[n][1] for n in self._layout.value.names],
                                "itemsize": self._value_stride})
            values = raw.view(per_cpu).reshape(count, self._cpus).astype(self._layout.value)
        else:
            values = raw.view(self._layout.value).copy()
        return keys, values

    def _empty_values(self) -> np.ndarray:
        if self._layout.percpu:
            return np.zeros((0, self._cpus), dtype=self._layout.value)
        return np.zeros(0, dtype=self._layout.value)

    def _read_batch(self, wanted: int) -> int | None:
        from bcc.libbcc import lib

        fd = self._table.map_fd
        cursor = ctypes.c_uint32(0)
        next_cursor = ctypes.c_uint32(0)
        count = ctypes.c_uint32(0)
        total = 0
        key_size = self._layout.key.itemsize
        value_size = self._cpus * self._value_stride
        keys_addr = self._keys.ctypes.data
        values_addr = self._values.ctypes.data
        first = True
        while total < wanted:
            count.value = wanted - total
            res = lib.bpf_lookup_batch(
                fd,
                None if first else ctypes.byref(cursor),
                ctypes.byref(next_cursor),
                ctypes.c_void_p(keys_addr + key_size * total),
                ctypes.c_void_p(values_addr + value_size * total),
                ctypes.byref(count),
            )
            # libbpf returns -errno (older ones -1, with errno set): errno is read only then,
            # since after a success it still holds whatever an earlier call left there.
            err = 0 if res == 0 else (ctypes.get_errno() if res == -1 else -res)
            total += count.value
            if res != 0:
                if err == errno.ENOENT:
                    return total  # walked the whole map
                if first and err in NO_BATCH_ERRNOS:
                    return None  # this kernel or map type has no batch lookup
                raise OSError(err, f"BPF_MAP_LOOKUP_BATCH: {os.strerror(err)}")
            if count.value == 0:
                return total
            cursor.value = next_cursor.value
            first = False
        return total

    def _read_by_index(self, wanted: int) -> int:
        from bcc.libbcc import lib

        fd = self._table.map_fd
        key = ctypes.c_uint32(0)
        value_size = self._cpus * self._value_stride
        values_addr = self._values.ctypes.data
        indexes = self._keys.view(np.uint32)
        for index in range(wanted):
            key.value = index
            if lib.bpf_lookup_elem(fd, ctypes.byref(key), ctypes.c_void_p(values_addr + value_size * index)) != 0:
                err = ctypes.get_errno()
                raise OSError(err, f"BPF_MAP_LOOKUP_ELEM of index {index}: {os.strerror(err)}")
            indexes[index] = index
        return wanted

    def _read_iter(self, wanted: int) -> int:
        total = 0
        value_size = self._cpus * self._value_stride
        for key, value in self._table.items():
            if total >= wanted:
                break
            self._keys[total : total + 1].view(np.uint8)[:] = np.frombuffer(bytes(key), np.uint8)
            if self._layout.percpu:
                for cpu, per_cpu_value in enumerate(value):
                    start = total * value_size + cpu * self._value_stride
                    # BCC hands a per-CPU integer leaf (a u64 counter) over as Python ints:
                    # bytes(289) would be 289 zero bytes, not the number.
                    blob = (per_cpu_value.to_bytes(self._leaf_size, "little", signed=per_cpu_value < 0)
                            if isinstance(per_cpu_value, int) else bytes(per_cpu_value))
                    self._values[start : start + len(blob)] = np.frombuffer(blob, np.uint8)
            else:
                start = total * value_size
                blob = bytes(value)
                self._values[start : start + len(blob)] = np.frombuffer(blob, np.uint8)
            total += 1
        return total


def match_keys(prev_keys: np.ndarray | None, keys: np.ndarray) -> np.ndarray:
    """For each key, its index in prev_keys, or -1. Keys compare as raw bytes, so any
    structured key dtype works; O(n log n) in live keys, independent of the event rate."""
    if prev_keys is None or len(prev_keys) == 0 or len(keys) == 0:
        return np.full(len(keys), -1, dtype=np.int64)
    width = keys.dtype.itemsize
    prev_raw = np.ascontiguousarray(prev_keys).view(f"V{width}")
    raw = np.ascontiguousarray(keys).view(f"V{width}")
    order = np.argsort(prev_raw, kind="stable")
    pos = np.minimum(np.searchsorted(prev_raw[order], raw), len(prev_raw) - 1)
    found = prev_raw[order][pos] == raw
    return np.where(found, order[pos], -1)


def counter_deltas(
    prev_keys: np.ndarray | None,
    prev_counts: np.ndarray | None,
    keys: np.ndarray,
    counts: np.ndarray,
) -> np.ndarray:
    """Per-key increase of cumulative counters since the previous read.

    `counts` is a plain integer array or a structured one (one field per counter); the
    result has the same shape with int64 fields. A key that is new, or whose first counter
    went down (evicted from an LRU map and re-created), counts from zero.
    """
    index = match_keys(prev_keys, keys)
    found = index >= 0
    safe = np.where(found, index, 0)
    have_previous = prev_counts is not None and len(prev_counts) > 0

    def base_of(previous: np.ndarray) -> np.ndarray | int:
        return np.where(found, previous.astype(np.int64)[safe], 0) if have_previous else 0

    fields = counts.dtype.names
    if fields is None:
        now = counts.astype(np.int64)
        delta = now - base_of(prev_counts)
        return np.where(delta < 0, now, delta)
    out = np.zeros(len(counts), dtype=[(name, np.int64) for name in fields])
    recreated = np.zeros(len(counts), dtype=bool)
    for name in fields:
        now = counts[name].astype(np.int64)
        out[name] = now - base_of(prev_counts[name] if have_previous else None)
        recreated |= out[name] < 0
    for name in fields:
        out[name] = np.where(recreated, counts[name].astype(np.int64), out[name])
    return out
