"""NAPI polls per CPU and per device (bpf/napi.bpf.c)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import NetprofError
from ..inert import is_inert
from ..kernel.loader import BpfLoader
from ..kernel.maps import MapLayout, MapReader
from .base import ParkableProbe, ProbeStatus, TracepointParking

# A raw tracepoint (bpf/napi.bpf.c says why): the event of napi:napi_poll.
RAW_TRACEPOINT = "napi_poll"
VIA = f"raw_tracepoint:{RAW_TRACEPOINT}"
MAX_DEVICES = 4096
IFNAMSIZ = 16
# What the tracepoint says for a NAPI instance without a device: the per-CPU backlog that
# netif_rx() and RPS feed.
BACKLOG_DEVICE = "(no_device)"

# Mirrors struct napi_device_key in bpf/napi.h.
DEVICE_KEY = np.dtype([("netns_inode", "<u4"), ("name", f"S{IFNAMSIZ}")])
# Mirrors struct napi_slot: the device's slot + 1 in one CPU's napi_counts_by_slot (0: none).
DEVICE_SLOT = np.dtype([("slot_plus_one", "<u4"), ("unused", "<u4")])
# Mirrors struct napi_counts (C pads the key to 20 bytes, the value is three u64).
NAPI_COUNTS = np.dtype([("polls", "<u8"), ("packets", "<u8"), ("budget_exhausted", "<u8")])
SLOT_KEY = np.dtype([("index", "<u4")])
COUNT = np.dtype([("count", "<u8")])
# One row per (CPU, device): what the per-CPU map becomes once flattened.
CPU_DEVICE_KEY = np.dtype([("cpu", "<u4"), ("netns_inode", "<u4"), ("name", f"S{IFNAMSIZ}")])


@dataclass(frozen=True)
class NapiCounts:
    """Cumulative counts since attach, one row per (CPU, device) that was ever polled."""

    devices: np.ndarray   # CPU_DEVICE_KEY
    counts: np.ndarray    # NAPI_COUNTS, aligned with devices
    map_full: int         # polls not counted because the device map was full


def device_name(raw: bytes) -> str:
    """A device name from the kernel: bytes up to the first NUL, never trusted as text."""
    text = raw.split(b"\0", 1)[0].decode("ascii", errors="replace")
    return "".join(ch if is_inert(ch) else "?" for ch in text)  # inert() decides what is safe


def rows_by_slot(keys: np.ndarray, slots: np.ndarray, by_slot: np.ndarray,
                 cpus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One row per (CPU, device) that was polled: device i's counts on CPU column c are at
    row slots[i, c] - 1 of by_slot's column c (by_slot holds the first len(by_slot) slots of
    every CPU; a slot given out after it was read is counted at the next read)."""
    slot_plus_one = slots["slot_plus_one"].astype(np.int64) if len(keys) else np.zeros((0, len(cpus)), np.int64)
    device, column = np.nonzero((slot_plus_one > 0) & (slot_plus_one <= len(by_slot)))
    counts = by_slot[slot_plus_one[device, column] - 1, column] if len(device) else np.zeros(0, NAPI_COUNTS)
    rows = np.zeros(len(device), dtype=CPU_DEVICE_KEY)
    rows["cpu"] = cpus[column]
    rows["netns_inode"] = keys["netns_inode"][device]
    rows["name"] = keys["name"][device]
    polled = counts["polls"] > 0
    return rows[polled], counts[polled].copy()


class NapiProbe(ParkableProbe):
    name = "napi"

    def __init__(self) -> None:
        self._bpf = None
        self._slots: MapReader | None = None
        self._by_slot: MapReader | None = None
        self._full: MapReader | None = None
        self._cpus = np.zeros(0, dtype=np.uint32)
        self._parking: TracepointParking | None = None

    def attach(self, loader: BpfLoader) -> ProbeStatus:
        try:
            self._bpf = loader.compile("napi", [f"-DNETPROF_NAPI_MAX_DEVICES={MAX_DEVICES}"])
        except NetprofError as exc:
            return ProbeStatus(self.name, False, VIA, str(exc))
        from bcc.utils import get_possible_cpus

        self._cpus = np.array(get_possible_cpus(), dtype=np.uint32)
        self._slots = MapReader(self._bpf[b"napi_slot_of_device"], MapLayout(DEVICE_KEY, DEVICE_SLOT, percpu=True))
        self._by_slot = MapReader(self._bpf[b"napi_counts_by_slot"], MapLayout(SLOT_KEY, NAPI_COUNTS, percpu=True))
        self._full = MapReader(self._bpf[b"napi_map_full"], MapLayout(SLOT_KEY, COUNT, percpu=True))
        # Each CPU's cached key is forgotten on unpark: a napi_struct freed while parked may
        # be another device's now.
        self._parking = TracepointParking(self._bpf, (), loader.tracepoints_problem, raw_tracepoints=(RAW_TRACEPOINT,),
                                          forget=(b"napi_last_polled",))
        return ProbeStatus(self.name, True, VIA)

    def read(self) -> NapiCounts:
        if self._bpf is None:
            raise RuntimeError("read() before a successful attach()")
        keys, slots = self._slots.read()
        # Only the slots in use: the array has MAX_DEVICES of them on every CPU.
        in_use = int(slots["slot_plus_one"].max()) if len(keys) else 0
        _, by_slot = self._by_slot.read(limit=in_use)
        devices, counts = rows_by_slot(keys, slots, by_slot, self._cpus)
        _, full = self._full.read()
        return NapiCounts(devices, counts, int(full["count"].sum()))

    def detach(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None
        self._parking = None
