"""Kernel stacks counted in BPF (bpf/stacks.h): the lost-event slots, and stack ids turned
into function names for flame graphs.

A probe that samples stacks hands its sources a `walk(stack_id)` that yields the stack's
return addresses, innermost first (what BCC's stack map gives). `StackSymbolizer` turns
each id into frames once and keeps them: stack ids are stable because the programs never
delete from their stack maps.

Frames are function names without offsets (`udp_queue_rcv_one_skb`, or
`nft_do_chain [nf_tables]` for a module), so every visit to a function is one frame in a
flame graph; the drop-site table keeps the exact `function+0xoffset` of the drop.
"""
from __future__ import annotations

import re

import threading
import time
from collections.abc import Callable, Iterable

import numpy as np

from .kallsyms import Kallsyms
from .maps import MapReader

# enum stack_lost_slot in bpf/stacks.h, in order: why an event has no counted stack.
STACK_LOST_SLOTS = ("no_stack_id", "counter_map_full", "rate_limited")
STACK_RATE_LIMITED = "rate_limited"   # a budget's doing, not a full map: reported as ignored
# Stack budgets (bpf/stacks.h), per CPU and second. A stack walk costs a few µs on 6.18
# (5 µs measured at the end of a 100k drops/s storm), so the CPU budget bounds the stack
# cost to ~1% of a CPU per program however hard the node drops; the per-pod budget keeps one
# pod's storm from taking every stack. Both hold every stack of the lab's bursts (991 drops
# in a few ms on one CPU).
STACKS_PER_S_PER_CPU = 2000
STACKS_PER_S_PER_POD = 1000
# Pods whose budgets are tracked at once (an LRU: a pod dropping again after eviction just
# starts a fresh budget).
STACK_BUDGET_PODS = 1024


def stack_budget_cflags() -> list[str]:
    return [f"-DNETPROF_STACKS_PER_S={STACKS_PER_S_PER_CPU}ULL",
            f"-DNETPROF_STACKS_PER_S_PER_POD={STACKS_PER_S_PER_POD}ULL",
            f"-DNETPROF_STACK_BUDGET_PODS={STACK_BUDGET_PODS}"]
STACK_LOST_KEY = np.dtype([("slot", "<u4")])
# A stack with an address kallsyms cannot name (a module loaded after kallsyms was read)
# triggers a reload of /proc/kallsyms, at most this often.
KALLSYMS_RELOAD_S = 10.0


def read_stacks_lost(reader: MapReader) -> dict[str, int]:
    """A per-CPU array indexed by bpf/stacks.h's slots → {slot name: count over CPUs}."""
    lost = dict.fromkeys(STACK_LOST_SLOTS, 0)
    slots, per_slot = reader.read()
    for slot, counts in zip(slots["slot"], per_slot["count"]):
        if slot < len(STACK_LOST_SLOTS):
            lost[STACK_LOST_SLOTS[slot]] = int(counts.sum())
    return lost


# Suffixes GCC and clang give the copies they make of a function: a split-off part
# (`__tcp_retransmit_skb.part.0` on Debian's 6.1), a copy with changed arguments (.isra,
# .constprop), the cold half (.cold), a renamed local (.llvm.<hash>). A flame graph shows
# the function the source names, or the same code splits into two frames across kernels.
_CLONE_SUFFIX = re.compile(r"(\.(part|isra|constprop|cold|llvm|lto_priv)(\.\d+)?)+$")


def source_function_name(symbol: str) -> str:
    """`__tcp_retransmit_skb.part.0` → `__tcp_retransmit_skb`; other names unchanged."""
    base = _CLONE_SUFFIX.sub("", symbol)
    return base or symbol


def frame_name(kallsyms: Kallsyms, address: int) -> str:
    found = kallsyms.lookup(address)
    if found is None:
        return f"0x{address:x}"
    symbol, _offset = found
    name = source_function_name(symbol.name)
    return f"{name} [{symbol.module}]" if symbol.module else name


class SharedKallsyms:
    """One parsed /proc/kallsyms for the whole process: parsing takes ~0.2 s, and the drop
    and retransmit sources must not each pay it inside a sampling interval."""

    def __init__(self, load: Callable[[], Kallsyms] = Kallsyms.load, clock: Callable[[], float] = time.monotonic):
        self._load = load
        self._clock = clock
        self._lock = threading.Lock()
        self._table: Kallsyms | None = None
        self._loaded_at = 0.0

    def get(self) -> Kallsyms:
        with self._lock:
            if self._table is None:
                self._table = self._load()
                self._loaded_at = self._clock()
            return self._table

    def refresh(self) -> Kallsyms:
        """A newly read table if the one held is older than KALLSYMS_RELOAD_S (a caller met
        an address it cannot name: a module loaded since), else the one held."""
        with self._lock:
            if self._table is None or self._clock() - self._loaded_at > KALLSYMS_RELOAD_S:
                self._table = self._load()
                self._loaded_at = self._clock()
            return self._table


SHARED_KALLSYMS = SharedKallsyms()


class StackSymbolizer:
    """stack id → frames, outer → inner, cached per id. Uses the process's shared kallsyms
    (or a fixed table, for tests: never reloaded)."""

    def __init__(self, walk: Callable[[int], Iterable[int]], kallsyms: Kallsyms | None = None,
                 shared: SharedKallsyms = SHARED_KALLSYMS):
        self._walk = walk
        self._fixed = kallsyms
        self._shared = shared
        self._frames: dict[int, tuple[str, ...]] = {}

    def kallsyms(self) -> Kallsyms:
        """The symbol table in use (also for the drop sites' function+offset names)."""
        return self._fixed if self._fixed is not None else self._shared.get()

    def frames(self, stack_id: int) -> tuple[str, ...]:
        cached = self._frames.get(stack_id)
        if cached is not None:
            return cached
        try:
            addresses = [int(a) for a in self._walk(stack_id)]
        except KeyError:
            addresses = []  # not in the stack map (cannot happen for an id the program counted)
        table = self.kallsyms()
        if self._fixed is None and any(table.lookup(a) is None for a in addresses):
            table = self._shared.refresh()
        frames = tuple(frame_name(table, a) for a in reversed(addresses))
        self._frames[stack_id] = frames
        return frames
