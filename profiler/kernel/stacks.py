"""Kernel stacks sampled in BPF on a CPU-time budget (bpf/stacks.h): the budget's macros,
the sampler's counters, the generation flip of the stack maps, and stacks turned into
function names for flame graphs.

A probe that samples stacks folds its two generations of stack maps at every read
(`StackGenerations`): each stack counted since the previous fold comes with its return
addresses, innermost first (what BCC's stack map gives). `StackSymbolizer` turns each
address list into frames once and keeps them.

Frames are function names without offsets (`udp_queue_rcv_one_skb`, or
`nft_do_chain [nf_tables]` for a module), so every visit to a function is one frame in a
flame graph; the drop-site table keeps the exact `function+0xoffset` of the drop.
"""
from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np

from .kallsyms import Kallsyms
from .maps import MapLayout, MapReader

# enum stack_lost_slot in bpf/stacks.h, in order: why events have no counted stack.
STACK_LOST_SLOTS = ("no_stack_id", "counter_map_full")
STACK_LOST_KEY = np.dtype([("slot", "<u4")])
# Mirrors struct stack_count (value of the per-stack counter maps).
STACK_COUNT = np.dtype([("events", "<u8"), ("samples", "<u8")])
# Mirrors struct stack_sampler (a per-CPU array of one per program).
STACK_SAMPLER = np.dtype([("refilled_ns", "<u8"), ("credit_ns", "<i8"), ("walks", "<u8"), ("walk_ns", "<u8"),
                          ("skipped_spacing", "<u8"), ("skipped_budget", "<u8")])
# Mirrors struct stack_key_state (per sampling key, per CPU).
STACK_KEY_STATE = np.dtype([("walked_ns", "<u8"), ("pending", "<u8"), ("stack_id", "<u4"), ("epoch", "<u4")])
SLOT_KEY = np.dtype([("slot", "<u4")])

# The stack budget (bpf/stacks.h): the share of each CPU that stack walks may take, measured
# by the programs' own clock. A walk costs 5 µs on bare 6.18, 20–40 µs virtualised.
DEFAULT_STACK_SHARE = 0.005
MAX_STACK_SHARE = 0.5
# Credit a CPU may save up: this much time's worth of its share (0.5% → 1 ms of walks).
STACK_CREDIT_WINDOW_S = 0.2
# A (site, reason, pod) is walked at most once per this on one CPU...
STACK_SPACING_S = 0.010
# ... and one not walked for this long may borrow credit (a rare site amid a storm).
STACK_RARE_S = 1.0
# Pods whose retransmit sampling state is tracked at once (LRU).
STACK_KEY_PODS = 1024
# A stack with an address kallsyms cannot name (a module loaded after kallsyms was read)
# triggers a reload of /proc/kallsyms, at most this often.
KALLSYMS_RELOAD_S = 10.0


def write_stacks_paused(table, paused: bool) -> None:
    """Set a program's "stacks paused" flag (a one-entry BPF array, read by the drop and
    retransmit programs before any stack work): the quiet detail tier. Takes effect at the
    next event; nothing is re-attached."""
    table[0] = table.Leaf(1 if paused else 0)


def stack_sampling_cflags(share: float = DEFAULT_STACK_SHARE) -> list[str]:
    """-D macros of bpf/stacks.h for a share of each CPU (0.005: 0.5%)."""
    if not 0 < share <= MAX_STACK_SHARE:
        raise ValueError(f"stack share must be in (0, {MAX_STACK_SHARE}], not {share}")
    ppm = max(1, round(share * 1_000_000))
    return [f"-DNETPROF_STACK_SHARE_PPM={ppm}ULL",
            f"-DNETPROF_STACK_CREDIT_MAX_NS={max(1, round(share * STACK_CREDIT_WINDOW_S * 1e9))}LL",
            f"-DNETPROF_STACK_SPACING_NS={round(STACK_SPACING_S * 1e9)}ULL",
            f"-DNETPROF_STACK_RARE_NS={round(STACK_RARE_S * 1e9)}ULL",
            f"-DNETPROF_STACK_KEY_PODS={STACK_KEY_PODS}"]


@dataclass(frozen=True)
class StackSampling:
    """One program's stack sampling since attach, summed over CPUs (cumulative but for
    `pending`, the events not yet attributed to a stack now)."""

    share: float = DEFAULT_STACK_SHARE
    walks: int = 0
    walk_ns: int = 0
    skipped_spacing: int = 0
    skipped_budget: int = 0
    pending: int = 0

    def counters(self, previous: "StackSampling | None", prefix: str) -> dict[str, int]:
        """This reading less the previous one, as a snapshot's `stack_sampling` entries."""
        before = previous or StackSampling(self.share)
        values = {f"{prefix}_{name}": getattr(self, name) - getattr(before, name)
                  for name in ("walks", "walk_ns", "skipped_spacing", "skipped_budget")}
        values[f"{prefix}_pending_now"] = self.pending
        values[f"{prefix}_share_ppm_now"] = round(self.share * 1_000_000)
        return values


def read_stack_sampler(reader: MapReader, share: float, pending: int = 0) -> StackSampling:
    _keys, per_cpu = reader.read()
    total = {name: int(per_cpu[name].astype(np.uint64).sum()) for name in
             ("walks", "walk_ns", "skipped_spacing", "skipped_budget")}
    return StackSampling(share, pending=pending, **total)


STACK_PROGRAMS = ("drop", "retransmit")
# The `reason` of retransmit stacks (drop stacks carry their drop reason).
RETRANSMIT_STACK_REASON = "TCP_RETRANSMIT"


def stack_sampling_json(total: Mapping[str, int], events_by_program: Mapping[str, int], duration_s: float,
                        cpus: int) -> dict | None:
    """A capture's `stack_sampling` section from the summed snapshot counters ("<program>_<name>")
    and the events the stacks of each program stand for: per program, walks, what was skipped
    and why, the ratio (walks per event: 1 = every event walked), and the share of the CPUs
    the walks took."""
    if not total:
        return None
    section: dict = {"share": None, "walks": 0, "walk_ns": 0, "skipped": 0, "events": 0, "pending": 0,
                     "ratio": None, "walk_cpu_share": None, "programs": {}}
    for program in STACK_PROGRAMS:
        if f"{program}_walks" not in total:
            continue
        events = int(events_by_program.get(program, 0))
        entry = {
            "walks": int(total.get(f"{program}_walks", 0)),
            "walk_ns": int(total.get(f"{program}_walk_ns", 0)),
            "skipped_spacing": int(total.get(f"{program}_skipped_spacing", 0)),
            "skipped_budget": int(total.get(f"{program}_skipped_budget", 0)),
            "events": events,
            "pending": int(total.get(f"{program}_pending_now", 0)),
            "share": total.get(f"{program}_share_ppm_now", 0) / 1e6,
        }
        entry["ratio"] = round(entry["walks"] / events, 6) if events else None
        section["programs"][program] = entry
        for name in ("walks", "walk_ns", "events", "pending"):
            section[name] += entry[name]
        # Events not walked: a busy drop key is checked once per 16 events (bpf/drops.bpf.c),
        # so the checks' counters undercount them; events stood for less walks do not.
        section["skipped"] += max(0, events + entry["pending"] - entry["walks"])
        section["share"] = max(section["share"] or 0.0, entry["share"])
    section["ratio"] = round(section["walks"] / section["events"], 6) if section["events"] else None
    if duration_s > 0:
        section["walk_cpu_share"] = round(section["walk_ns"] / (duration_s * 1e9 * max(cpus, 1)), 6)
    return section


def read_stacks_lost(reader: MapReader) -> dict[str, int]:
    """A per-CPU array indexed by bpf/stacks.h's slots → {slot name: count over CPUs}."""
    lost = dict.fromkeys(STACK_LOST_SLOTS, 0)
    slots, per_slot = reader.read()
    for slot, counts in zip(slots["slot"], per_slot["count"]):
        if slot < len(STACK_LOST_SLOTS):
            lost[STACK_LOST_SLOTS[slot]] = int(counts.sum())
    return lost


@dataclass(frozen=True)
class StackFold:
    """Stacks counted since the previous fold: keys as the counter map has them, their
    events and walks (STACK_COUNT), and each one's return addresses, innermost first."""

    keys: np.ndarray
    counts: np.ndarray
    addresses: tuple[tuple[int, ...], ...]

    @classmethod
    def empty(cls, key: np.dtype) -> "StackFold":
        return cls(np.zeros(0, key), np.zeros(0, STACK_COUNT), ())


@dataclass(frozen=True)
class StackTail:
    """Events each sampling key still holds (pending since its last walk, per CPU), with that
    walk's stack: `keys` are counter-map keys (stack_id and generation filled in), aligned
    with `epochs` and `pending`. Given to the last fold of a capture, so its stacks add up."""

    keys: np.ndarray
    epochs: np.ndarray
    pending: np.ndarray


class StackGenerations:
    """The two generations of one program's stack maps (bpf/stacks.h), read at every fold.

    The generation array holds an epoch; epoch & 1 is the active generation. During an
    interval generation G is active; at the fold its rows are read (all of them: it was
    cleared before it became active), along with the other generation's rows that arrived
    after the previous fold read them (a program that had looked up the epoch just before the
    advance: a straggler). The other generation, quiet for a whole interval, is then cleared
    — counters and stack map — and made active under the next epoch. Nothing is lost at a
    flip, and no map fills over a long run. Stack ids mean something only within their
    generation until it is cleared, so addresses are read at the fold."""

    def __init__(self, counters, traces: tuple, generation, key: np.dtype, reader: MapReader | None = None):
        self._counters_table = counters
        self._counters = reader or MapReader(counters, MapLayout(key, STACK_COUNT))
        self._traces = traces
        self._generation = generation
        self._key = key
        self._read_of: list[dict[bytes, np.ndarray]] = [{}, {}]   # per generation: key bytes → counts read
        self._addresses: list[dict[int, tuple[int, ...]]] = [{}, {}]
        self.epoch = 0
        self._advance()

    @property
    def active(self) -> int:
        return self.epoch & 1

    def _advance(self) -> None:
        self.epoch += 1
        self._generation[self._generation.Key(0)] = self._generation.Leaf(self.epoch)

    def _walk(self, generation: int, stack_id: int) -> tuple[int, ...]:
        cached = self._addresses[generation].get(stack_id)
        if cached is None:
            try:
                cached = tuple(int(a) for a in self._traces[generation].walk(stack_id))
            except KeyError:
                cached = ()
            self._addresses[generation][stack_id] = cached
        return cached

    def fold(self, tail: StackTail | None = None) -> tuple[StackFold, int]:
        """Stacks since the previous fold; with `tail`, plus each key's pending events given
        to its last stack where that stack's generation still holds it. Returns the fold and
        how many pending events it gave."""
        keys, counts = self._counters.read()
        active, other = self.active, 1 - self.active
        rows: list[np.void] = []
        values: list[tuple[int, int]] = []
        addresses: list[tuple[int, ...]] = []
        fresh: dict[bytes, np.ndarray] = {}
        stale: list[np.void] = []
        for key, count in zip(keys, counts):
            generation = int(key["generation"]) & 1
            raw = key.tobytes()
            if generation == active:
                fresh[raw] = count
                events, samples = int(count["events"]), int(count["samples"])
            else:
                stale.append(key)
                before = self._read_of[other].get(raw)
                events = int(count["events"]) - (int(before["events"]) if before is not None else 0)
                samples = int(count["samples"]) - (int(before["samples"]) if before is not None else 0)
            if events > 0 or samples > 0:
                rows.append(key)
                values.append((events, samples))
                addresses.append(self._walk(generation, int(key["stack_id"])))
        given = 0
        if tail is not None:
            for key, epoch, pending in zip(tail.keys, tail.epochs, tail.pending):
                # Only the current epoch's and the previous one's maps still hold their stacks.
                if pending <= 0 or int(epoch) not in (self.epoch, self.epoch - 1) or int(epoch) == 0:
                    continue
                found = self._walk(int(epoch) & 1, int(key["stack_id"]))
                if not found:
                    continue
                rows.append(key)
                values.append((int(pending), 0))
                addresses.append(found)
                given += int(pending)
        # The other generation is read in full: clear it and make it the active one.
        for key in stale:
            try:
                del self._counters_table[self._counters_table.Key.from_buffer_copy(key.tobytes())]
            except KeyError:
                pass
        self._traces[other].clear()
        self._addresses[other] = {}
        self._read_of[other] = {}
        self._read_of[active] = fresh
        self._advance()
        fold = StackFold(np.array(rows, self._key).reshape(-1), np.array(values, STACK_COUNT).reshape(-1),
                         tuple(addresses))
        return fold, given


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


# The kernel's dispatch into BPF on a raw tracepoint (bpf_trace_run<N>, and on some kernels
# __bpf_trace_<event>/__traceiter_<event>): a stack walked from a raw tracepoint starts in
# the program itself, then these, then the function that fired the event.
_TRACING_DISPATCH = re.compile(r"^(bpf_trace_run\d+|__bpf_trace_\w+|__traceiter_\w+)( \[|$)")


def without_tracing_frames(frames: tuple[str, ...]) -> tuple[str, ...]:
    """Frames (outer → inner) cut above the tracing machinery: the program and the kernel's
    dispatch to it are the same on every stack of a hook and say nothing of the packet, and
    a perf-event tracepoint's stacks (the retransmit program's) never had them."""
    # From the inner end: an event fired inside another hook's program keeps the outer
    # dispatch, which is part of how the packet got there.
    for index in range(len(frames) - 1, -1, -1):
        if _TRACING_DISPATCH.match(frames[index]):
            while index > 0 and _TRACING_DISPATCH.match(frames[index - 1]):
                index -= 1
            return frames[:index]
    return frames


class SharedKallsyms:
    """One parsed /proc/kallsyms for the whole process: read and parsed in ≈70 ms, and the drop
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
    """Return addresses (innermost first) → frames, outer → inner, cached per address list:
    stack ids are recycled with their generation's map (bpf/stacks.h), the addresses are
    what stays true. Uses the process's shared kallsyms (or a fixed table, for tests: never
    reloaded)."""

    # Distinct stacks remembered; past it the cache starts afresh (a node has hundreds).
    MAX_CACHED = 16384

    def __init__(self, kallsyms: Kallsyms | None = None, shared: SharedKallsyms = SHARED_KALLSYMS):
        self._fixed = kallsyms
        self._shared = shared
        self._frames: dict[tuple[int, ...], tuple[str, ...]] = {}

    def kallsyms(self) -> Kallsyms:
        """The symbol table in use (also for the drop sites' function+offset names)."""
        return self._fixed if self._fixed is not None else self._shared.get()

    def frames(self, addresses: tuple[int, ...]) -> tuple[str, ...]:
        cached = self._frames.get(addresses)
        if cached is not None:
            return cached
        table = self.kallsyms()
        if self._fixed is None and any(table.lookup(a) is None for a in addresses):
            table = self._shared.refresh()
        frames = without_tracing_frames(tuple(frame_name(table, a) for a in reversed(addresses)))
        if len(self._frames) >= self.MAX_CACHED:
            self._frames.clear()
        self._frames[addresses] = frames
        return frames
