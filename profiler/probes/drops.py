"""skb drops by reason per netns / CPU / call site, and receive-queue-full events
(bpf/drops.bpf.c).

The kernel keeps one per-CPU counter per (call site, netns, reason); the views the sources
use — by (netns, reason), by reason per CPU, by (site, reason) — are folded from it here,
once per read, with numpy."""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Callable, Mapping

import numpy as np

from ..errors import NetprofError
from ..kernel.features import tracepoint_fields
from ..kernel.kallsyms import Kallsyms
from ..kernel.loader import BpfLoader
from ..kernel.maps import MapLayout, MapReader
from ..kernel.shim import kernel_version_code
from ..kernel.typed_tracepoint import attach_typed_tracepoint
from ..kernel.stacks import (
    DEFAULT_STACK_SHARE, STACK_LOST_KEY, STACK_LOST_SLOTS, STACK_SAMPLER, StackFold, StackGenerations,
    StackSampling, StackTail, read_stack_sampler, read_stacks_lost, stack_sampling_cflags,
    write_stacks_paused,
)
from .base import ProbeStatus
from .drop_sites import SITE_REASONS, SiteRange, site_ranges, write_site_ranges

# The program runs on the raw tracepoint (bpf/drops.bpf.c says why), typed (tp_btf) where
# BTF has its prototype; without BTF the perf-event tracepoint's format file says which
# arguments this kernel passes.
RAW_TRACEPOINT = "kfree_skb"
# Said after the method in the probe's status when reasons come from call sites.
VIA_SITES = "(reasons from call sites)"
RCVQUEUE_RAW_TRACEPOINT = "sock_rcvqueue_full"
STACKS_VIA_PREFIX = "bpf_get_stackid at "
TYPED_CFLAG = "-DNETPROF_TYPED_LOADS"


def hook_via(tracepoint: str, typed: bool, from_sites: bool = False, typed_refusal: str | None = None) -> str:
    """How a drops hook is attached, as the probe's status says it: `tp_btf:kfree_skb` typed,
    `raw_tracepoint:kfree_skb` otherwise, with why typed was refused when it was tried."""
    via = f"{'tp_btf' if typed else 'raw_tracepoint'}:{tracepoint}"
    if from_sites:
        via = f"{via} {VIA_SITES}"
    if typed_refusal:
        via = f"{via} ({typed_refusal})"
    return via


def statuses_via(typed: bool, from_sites: bool, typed_refusal: str | None = None) -> tuple[str, str, str]:
    """The methods of the three statuses the probe reports: drops, receive queue, stacks."""
    return (hook_via(RAW_TRACEPOINT, typed, from_sites, typed_refusal), hook_via(RCVQUEUE_RAW_TRACEPOINT, typed),
            STACKS_VIA_PREFIX + hook_via(RAW_TRACEPOINT, typed))
MAX_NETNS = 4096
# (call site, netns, reason) triples: a pod drops for a few reasons at a few sites each, so
# this holds a few thousand dropping pods. Allocated as keys appear (8 B per CPU each).
MAX_DROP_KEYS = 16384
# Before 6.1 a tracing program must not allocate map entries at run time (bpf_mem_alloc came
# in 6.1): the map is preallocated there, every key on every CPU, so it holds fewer.
RUNTIME_ALLOCATION_SAFE_FROM = (6, 1)
MAX_DROP_KEYS_PREALLOCATED = 4096
MAX_LISTENERS = 4096        # (netns, port) of listeners that overflowed
# Kernel stacks: distinct drop paths on a node number in the hundreds; a stack map entry
# takes ~1 KiB (127 frames), so 2 generations × 2048 of them is 4 MiB of locked kernel
# memory. Each generation holds one interval's stacks only (bpf/stacks.h).
MAX_STACKS = 2048
MAX_STACK_KEYS = 8192       # (netns, reason, stack, generation)
# TCP flows whose packets were dropped, per (site, netns, reason): LRU, 64 B per entry.
MAX_FLOW_KEYS = 4096

# Mirrors bpf/drops.h.
DROP_KEY = np.dtype([("location", "<u8"), ("netns_inode", "<u4"), ("reason", "<u4")])
# struct drop_count: the count, and its key's stack sampling state (struct stack_key_state).
DROP_COUNT = np.dtype([("count", "<u8"), ("stack_walked_ns", "<u8"), ("stack_pending", "<u8"),
                       ("stack_id", "<u4"), ("stack_epoch", "<u4")])
LISTEN_KEY = np.dtype([("netns_inode", "<u4"), ("port", "<u2"), ("_pad", "<u2")])
NETNS_KEY = np.dtype([("netns_inode", "<u4")])
SLOT_KEY = np.dtype([("slot", "<u4")])
STACK_KEY = np.dtype([("netns_inode", "<u4"), ("reason", "<u4"), ("stack_id", "<u4"), ("generation", "<u4")])
FLOW_KEY = np.dtype([("location", "<u8"), ("netns_inode", "<u4"), ("reason", "<u4"), ("family", "<u2"),
                     ("sport", "<u2"), ("dport", "<u2"), ("_pad", "<u2"),
                     ("saddr", "u1", (16,)), ("daddr", "u1", (16,))])
COUNT = np.dtype([("count", "<u8")])
# The views folded from DROP_KEY counts (user space only).
NETNS_REASON_KEY = np.dtype([("netns_inode", "<u4"), ("reason", "<u4")])
REASON_KEY = np.dtype([("reason", "<u4")])
SITE_KEY = np.dtype([("location", "<u8"), ("reason", "<u4"), ("_pad", "<u4")])

# enum drops_uncounted_slot in bpf/drops.h, in order.
UNCOUNTED_SLOTS = (
    "not_specified",        # reason NOT_SPECIFIED: generic frees, not drops
    "not_a_drop",           # NOT_DROPPED_YET / CONSUMED
    "drops_by_netns_reason_site",  # the rest: drops a full map could not count, by map
    "listen_overflows_by_port",
    "rcvqueue_full_by_netns",
)
IGNORED_SLOTS = ("not_specified", "not_a_drop")

# Reasons with special meaning to the program; absent ones (older kernels) never match.
_NO_SUCH_REASON = 0xFFFFFFFF
SUBSYSTEM_SHIFT = 16  # SKB_DROP_REASON_SUBSYS_SHIFT: reasons of other subsystems set high bits


@dataclass(frozen=True)
class DropCounts:
    """Cumulative counts since attach."""

    netns_reasons: np.ndarray   # NETNS_REASON_KEY
    per_netns_reason: np.ndarray  # COUNT, aligned with netns_reasons
    cpu_reasons: np.ndarray     # REASON_KEY
    per_cpu_reason: np.ndarray  # COUNT, shape (len(cpu_reasons), possible CPUs)
    sites: np.ndarray           # SITE_KEY
    per_site: np.ndarray        # COUNT
    listeners: np.ndarray       # LISTEN_KEY: (netns, local port) of overflowing listeners
    per_listener: np.ndarray    # COUNT: TCP_LISTEN_OVERFLOW drops charged to that listener
    rcvqueue_netns: np.ndarray  # NETNS_KEY
    per_rcvqueue_netns: np.ndarray  # COUNT: sock_rcvqueue_full events
    uncounted: Mapping[str, int]  # UNCOUNTED_SLOTS → count, summed over CPUs
    # Drops per (netns, reason, kernel stack) sampled since the previous read (not
    # cumulative: the stack maps are recycled), weighted by the drops each walk stands for;
    # empty when stacks are not sampled.
    stacks: StackFold = field(default_factory=lambda: StackFold.empty(STACK_KEY))
    # STACK_LOST_SLOTS → drops with no counted stack, summed over CPUs.
    stacks_lost: Mapping[str, int] = field(default_factory=lambda: MappingProxyType(dict.fromkeys(STACK_LOST_SLOTS, 0)))
    sampling: StackSampling | None = None   # None when stacks are not sampled
    # TCP drops per (site, netns, reason, flow); cumulative while the flow stays in the LRU map.
    flows: np.ndarray = field(default_factory=lambda: np.zeros(0, FLOW_KEY))
    per_flow: np.ndarray = field(default_factory=lambda: np.zeros(0, COUNT))

    @property
    def listen_overflows_by_port(self) -> dict[tuple[int, int], int]:
        """(netns inode, local port) → cumulative TCP_LISTEN_OVERFLOW drops."""
        return {
            (int(key["netns_inode"]), int(key["port"])): int(count)
            for key, count in zip(self.listeners, self.per_listener["count"])
        }


@dataclass(frozen=True)
class DropViews:
    netns_reasons: np.ndarray    # NETNS_REASON_KEY, sorted
    per_netns_reason: np.ndarray  # COUNT, summed over CPUs and sites
    cpu_reasons: np.ndarray      # REASON_KEY, sorted
    per_cpu_reason: np.ndarray   # COUNT, shape (len(cpu_reasons), CPUs), summed over netns and sites
    sites: np.ndarray            # SITE_KEY, sorted
    per_site: np.ndarray         # COUNT, summed over CPUs and netns


def fold_drop_counts(keys: np.ndarray, per_cpu: np.ndarray) -> DropViews:
    """The three views of the kernel's per-CPU (site, netns, reason) counters.

    Each view's keys only grow as long as the kernel's do (nothing is deleted from the map),
    so cumulative sums stay cumulative and the sources' per-key deltas still hold."""
    counts = per_cpu["count"].astype(np.uint64)  # (keys, CPUs)

    def group(view_keys: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        unique, inverse = np.unique(view_keys, return_inverse=True)
        sums = np.zeros((len(unique),) + values.shape[1:], np.uint64)
        np.add.at(sums, inverse.reshape(-1), values)
        out = np.zeros(sums.shape, COUNT)
        out["count"] = sums
        return unique, out

    by_netns = np.zeros(len(keys), NETNS_REASON_KEY)
    by_netns["netns_inode"], by_netns["reason"] = keys["netns_inode"], keys["reason"]
    by_reason = np.zeros(len(keys), REASON_KEY)
    by_reason["reason"] = keys["reason"]
    by_site = np.zeros(len(keys), SITE_KEY)
    by_site["location"], by_site["reason"] = keys["location"], keys["reason"]
    total = counts.sum(axis=1, dtype=np.uint64)
    netns_reasons, per_netns_reason = group(by_netns, total)
    cpu_reasons, per_cpu_reason = group(by_reason, counts)
    sites, per_site = group(by_site, total)
    return DropViews(netns_reasons, per_netns_reason, cpu_reasons, per_cpu_reason, sites, per_site)


def drop_stack_tail(keys: np.ndarray, per_cpu: np.ndarray) -> StackTail:
    """Pending drops per (site, netns, reason) and CPU with their last stack, as counter-map
    keys (bpf/stacks.h)."""
    rows, cpus = np.nonzero(per_cpu["stack_pending"] > 0) if len(keys) else (np.zeros(0, int), np.zeros(0, int))
    state = per_cpu[rows, cpus]
    tail = np.zeros(len(rows), STACK_KEY)
    tail["netns_inode"], tail["reason"] = keys["netns_inode"][rows], keys["reason"][rows]
    tail["stack_id"], tail["generation"] = state["stack_id"], state["stack_epoch"] & 1
    return StackTail(tail, state["stack_epoch"].copy(), state["stack_pending"].astype(np.int64))


def reason_name(reason: int, names: Mapping[int, str]) -> str:
    """Name of a drop reason value, e.g. 6 → "SOCKET_RCVBUFF" on 6.18."""
    name = names.get(reason)
    if name is not None:
        return name
    subsystem = reason >> SUBSYSTEM_SHIFT
    if subsystem:
        return f"SUBSYSTEM_{subsystem}_{reason & ((1 << SUBSYSTEM_SHIFT) - 1)}"
    return f"REASON_{reason}"


def reason_value(names: Mapping[int, str], wanted: str) -> int | None:
    for value, name in names.items():
        if name == wanted:
            return value
    return None


def reason_cflags(names: Mapping[int, str]) -> list[str]:
    """-D macros for the reasons the program treats specially, from this kernel's enum."""
    flags = []
    for macro, name in (
        ("NETPROF_DROP_REASON_NOT_SPECIFIED", "NOT_SPECIFIED"),
        ("NETPROF_DROP_REASON_NOT_DROPPED_YET", "SKB_NOT_DROPPED_YET"),
        ("NETPROF_DROP_REASON_CONSUMED", "SKB_CONSUMED"),
        ("NETPROF_DROP_REASON_TCP_LISTEN_OVERFLOW", "TCP_LISTEN_OVERFLOW"),
        # Reasons only UDP and raw sockets give: such a drop is no TCP flow's (drops per flow).
        ("NETPROF_DROP_REASON_SOCKET_RCVBUFF", "SOCKET_RCVBUFF"),
        ("NETPROF_DROP_REASON_UDP_CSUM", "UDP_CSUM"),
    ):
        value = reason_value(names, name)
        flags.append(f"-D{macro}={_NO_SUCH_REASON if value is None else value}U")
    return flags


def drop_map_cflags(release: str) -> list[str]:
    """The drop counter map's size and allocation for this kernel release."""
    if kernel_version_code(release) < kernel_version_code("{}.{}".format(*RUNTIME_ALLOCATION_SAFE_FROM)):
        return ["-DNETPROF_DROPS_PREALLOC", f"-DNETPROF_DROPS_MAX_KEYS={MAX_DROP_KEYS_PREALLOCATED}"]
    return [f"-DNETPROF_DROPS_MAX_KEYS={MAX_DROP_KEYS}"]


@dataclass(frozen=True)
class KfreeSkbArguments:
    """Which arguments this kernel's kfree_skb passes after (skb, location)."""
    reason: bool      # enum skb_drop_reason, Linux 5.17+
    rx_sk: bool       # the receiving socket, Linux 6.11+


def kfree_skb_arguments(btf_args: tuple[str, ...] | None, fields: Callable[[], set[str]]) -> KfreeSkbArguments:
    """btf_args: the raw tracepoint's prototype (KernelLayout.kfree_skb_args), the one the
    kernel checks the program against; fields: reads skb:kfree_skb's format file, asked only
    for kernels described by tracefs alone. A 5.10 kernel behind an unreadable tracefs must
    not be taken for a current one: the program would read args[2] and the attach fail with
    EINVAL."""
    if btf_args is not None:
        return KfreeSkbArguments(reason=len(btf_args) >= 3 and btf_args[2] == "enum skb_drop_reason",
                                 rx_sk=len(btf_args) >= 4 and btf_args[3].endswith("*"))
    described = fields()
    if described:
        return KfreeSkbArguments(reason="reason" in described, rx_sk="rx_sk" in described)
    # Neither readable: a current kernel is assumed; if it is not, the compile or attach
    # fails and the probe's status says so.
    return KfreeSkbArguments(reason=True, rx_sk=True)


def kfree_skb_arguments_of(loader: BpfLoader) -> KfreeSkbArguments:
    """What the loader's kernel passes, as the drop probe decides it."""
    return kfree_skb_arguments(loader.layout.kfree_skb_args, lambda: tracepoint_fields(
        loader.info.tracefs or "/sys/kernel/tracing", "skb/kfree_skb"))


def program_cflags(release: str, arguments: KfreeSkbArguments, names: Mapping[int, str], from_sites: bool,
                   flows: bool) -> list[str]:
    """The drop program's macros for this kernel, optional parts (stacks, the receive-queue
    hook) aside. names: the reasons counted by (value → name)."""
    cflags = [
        *(("-DNETPROF_DROP_REASONS_FROM_SITES",) if from_sites else ()),
        *(FLOW_CFLAGS if flows else ()),
        f"-DNETPROF_MAX_NETNS={MAX_NETNS}",
        *drop_map_cflags(release),
        f"-DNETPROF_DROPS_MAX_LISTENERS={MAX_LISTENERS}",
        *reason_cflags(names),
    ]
    if arguments.rx_sk:
        cflags.append("-DNETPROF_KFREE_SKB_HAS_RX_SK")
    return cflags


STACK_CFLAGS = (
    "-DNETPROF_DROPS_STACKS",
    f"-DNETPROF_DROPS_MAX_STACKS={MAX_STACKS}",
    f"-DNETPROF_DROPS_MAX_STACK_KEYS={MAX_STACK_KEYS}",
)
RCVQUEUE_CFLAGS = ("-DNETPROF_DROPS_RCVQUEUE_FULL",)
FLOW_CFLAGS = ("-DNETPROF_DROPS_FLOWS", f"-DNETPROF_DROPS_MAX_FLOWS={MAX_FLOW_KEYS}")


class DropProbe:
    name = "skb_drops"
    rcvqueue_name = "rcvqueue_full"
    stacks_name = "drop_stacks"

    def __init__(self, stacks: bool = True, flows: bool = True, stack_share: float = DEFAULT_STACK_SHARE,
                 kallsyms: Callable[[], Kallsyms] = Kallsyms.load, reasons_from_sites: bool | None = None,
                 typed: bool = True) -> None:
        """kallsyms: where the call sites' functions are read, on a kernel without drop
        reasons (drop_sites.py). reasons_from_sites: None, only on such a kernel; True on
        any kernel (a test of that path on this one). typed: False, raw tracepoints even
        where tp_btf would load (a test or a benchmark of that path here)."""
        self._flows = flows
        self._kallsyms = kallsyms
        self._force_sites = bool(reasons_from_sites)
        self._typed = typed
        # Value → name of the reasons the program counts by: this kernel's enum, or
        # drop_sites.SITE_REASONS where reasons come from call sites. Set by attach().
        self.reason_names: Mapping[int, str] = MappingProxyType({})
        self.site_ranges: list[SiteRange] = []
        self._stack_cflags = (*STACK_CFLAGS, *stack_sampling_cflags(stack_share))
        self._stack_share = stack_share
        self._generations: StackGenerations | None = None
        self._bpf = None
        self._readers: dict[str, MapReader] = {}
        self._want_stacks = stacks
        self._stacks = False
        self.rcvqueue_status: ProbeStatus | None = None
        self.stacks_status: ProbeStatus | None = None
        self._stacks_paused = False

    def attach(self, loader: BpfLoader) -> ProbeStatus:
        """Attach kfree_skb (and sock_rcvqueue_full when the kernel allows it); the
        receive-queue probe's own status is left in `rcvqueue_status`."""
        arguments = kfree_skb_arguments_of(loader)
        from_sites = self._force_sites or not arguments.reason
        names = SITE_REASONS if from_sites else loader.layout.drop_reasons
        if from_sites:
            # The tracepoint has no reason before Linux 5.17: the call site gives it.
            self.site_ranges = site_ranges(self._kallsyms())
            if not self.site_ranges:
                why = ("kfree_skb passes no drop reason on this kernel (added in Linux 5.17), and "
                       "/proc/kallsyms names none of the functions a reason can be read from")
                via, rcvqueue_via, stacks_via = statuses_via(typed=False, from_sites=True)
                self.rcvqueue_status = ProbeStatus(self.rcvqueue_name, False, rcvqueue_via, "not tried: " + why)
                self.stacks_status = ProbeStatus(self.stacks_name, False, stacks_via, "not tried: " + why)
                return ProbeStatus(self.name, False, via, why)
        cflags = program_cflags(loader.info.release, arguments, names, from_sites, self._flows)
        typed_ids = loader.layout.typed_tracepoint_ids if self._typed else {}
        # Typed (tp_btf) first where BTF has the prototypes, with everything wanted, once;
        # refused, the probe's method says why. Then raw tracepoints: everything first, then
        # without the optional parts, so a kernel that refuses one (stack maps, the
        # receive-queue hook) still gets the drop counts. Each optional part's error is that of
        # the attempt that differed from the loaded one only by it.
        typed_refusal: str | None = None
        attempts = [(stacks, rcvqueue) for stacks, rcvqueue in ((True, True), (False, True), (True, False), (False, False))
                    if self._want_stacks or not stacks]
        errors: dict[tuple[bool, bool], str] = {}
        loaded: tuple[bool, bool] | None = None
        typed = False
        if RAW_TRACEPOINT in typed_ids:
            stacks, rcvqueue = self._want_stacks, RCVQUEUE_RAW_TRACEPOINT in typed_ids
            try:
                self._bpf = self._load_typed(loader, [*cflags, *(self._stack_cflags if stacks else ()),
                                                      *(RCVQUEUE_CFLAGS if rcvqueue else ())], typed_ids, rcvqueue)
                loaded, typed = (stacks, rcvqueue), True
            except NetprofError as exc:
                typed_refusal = str(exc)
        for stacks, rcvqueue in attempts if loaded is None else ():
            try:
                # RAW_TRACEPOINT_PROBEs attach at load time.
                self._bpf = loader.compile("drops", [*cflags, *(self._stack_cflags if stacks else ()),
                                                     *(RCVQUEUE_CFLAGS if rcvqueue else ())])
            except NetprofError as exc:
                errors[(stacks, rcvqueue)] = str(exc)
                continue
            loaded = (stacks, rcvqueue)
            break
        via, rcvqueue_via, stacks_via = statuses_via(typed, from_sites, typed_refusal)
        if loaded is None:
            last = errors[(False, False)]
            self.rcvqueue_status = ProbeStatus(self.rcvqueue_name, False, rcvqueue_via, errors.get((False, True), last))
            self.stacks_status = ProbeStatus(self.stacks_name, False, stacks_via,
                                             errors.get((True, False), last) if self._want_stacks else "not asked for")
            return ProbeStatus(self.name, False, via, last)
        if typed and not loaded[1]:
            errors[(loaded[0], True)] = "this kernel's BTF has no btf_trace_sock_rcvqueue_full prototype"
        self._stacks, rcvqueue_loaded = loaded
        self.rcvqueue_status = ProbeStatus(self.rcvqueue_name, rcvqueue_loaded, rcvqueue_via,
                                           None if rcvqueue_loaded else errors.get((self._stacks, True)))
        if self._want_stacks:
            self.stacks_status = ProbeStatus(self.stacks_name, self._stacks, stacks_via,
                                             None if self._stacks else errors.get((True, rcvqueue_loaded)))
        table = self._bpf.get_table
        if from_sites:
            write_site_ranges(table(b"drop_site_reasons"), self.site_ranges)
        self.reason_names = MappingProxyType(dict(names))
        self._readers = {
            "drops": MapReader(table(b"drops_by_netns_reason_site"), MapLayout(DROP_KEY, DROP_COUNT, percpu=True)),
            "listen": MapReader(table(b"listen_overflows_by_port"), MapLayout(LISTEN_KEY, COUNT)),
            "rcvqueue": MapReader(table(b"rcvqueue_full_by_netns"), MapLayout(NETNS_KEY, COUNT)),
            "uncounted": MapReader(table(b"drops_uncounted"), MapLayout(SLOT_KEY, COUNT, percpu=True)),
        }
        if self._flows:
            self._readers["flows"] = MapReader(table(b"drops_by_flow"), MapLayout(FLOW_KEY, COUNT))
        if self._stacks:
            self._generations = StackGenerations(
                table(b"drops_by_stack"), (table(b"drop_stack_traces_0"), table(b"drop_stack_traces_1")),
                table(b"drop_stack_generation"), STACK_KEY)
            self._readers["stack_lost"] = MapReader(table(b"drop_stacks_lost"), MapLayout(STACK_LOST_KEY, COUNT, percpu=True))
            self._readers["sampler"] = MapReader(table(b"drop_stack_sampler"), MapLayout(SLOT_KEY, STACK_SAMPLER, percpu=True))
            if self._stacks_paused:
                write_stacks_paused(table(b"drop_stacks_paused"), True)
        return ProbeStatus(self.name, True, via)

    @staticmethod
    def _load_typed(loader: BpfLoader, cflags: list[str], typed_ids: Mapping[str, int], rcvqueue: bool):
        """Compile with typed loads and attach the hooks as tp_btf; raises NetprofError with
        the kernel's reason, leaving nothing loaded."""
        bpf = loader.compile("drops", [*cflags, TYPED_CFLAG])
        try:
            for tracepoint in (RAW_TRACEPOINT, *((RCVQUEUE_RAW_TRACEPOINT,) if rcvqueue else ())):
                attach_typed_tracepoint(bpf, tracepoint, typed_ids[tracepoint])
        except NetprofError:
            bpf.cleanup()
            raise
        return bpf

    def pause_stacks(self, paused: bool) -> None:
        """Stack walks off (the quiet tier) or on; drops are counted either way. Before
        attach it sets how the program starts."""
        self._stacks_paused = paused
        if self._bpf is not None and self._stacks:
            write_stacks_paused(self._bpf.get_table(b"drop_stacks_paused"), paused)

    def read(self, flush: bool = False) -> DropCounts:
        """Cumulative counts, and the stacks sampled since the previous read. flush: the
        capture ends with this read: each (site, netns, reason)'s pending drops go to its
        last stack (bpf/stacks.h), so the capture's stacks add up to its drops."""
        if self._bpf is None:
            raise RuntimeError("read() before a successful attach()")
        drop_keys, per_cpu = self._readers["drops"].read()
        views = fold_drop_counts(drop_keys, per_cpu)
        listeners, per_listener = self._readers["listen"].read()
        rcvqueue_netns, per_rcvqueue_netns = self._readers["rcvqueue"].read()
        slots, per_slot = self._readers["uncounted"].read()
        uncounted = dict.fromkeys(UNCOUNTED_SLOTS, 0)
        for slot, counts in zip(slots["slot"], per_slot["count"]):
            if slot < len(UNCOUNTED_SLOTS):
                uncounted[UNCOUNTED_SLOTS[slot]] = int(counts.sum())
        flows, per_flow = (self._readers["flows"].read() if "flows" in self._readers
                           else (np.zeros(0, FLOW_KEY), np.zeros(0, COUNT)))
        counts = DropCounts(
            views.netns_reasons, views.per_netns_reason, views.cpu_reasons, views.per_cpu_reason,
            views.sites, views.per_site, listeners, per_listener, rcvqueue_netns, per_rcvqueue_netns, uncounted,
            flows=flows, per_flow=per_flow,
        )
        if not self._stacks or self._generations is None:
            return counts
        pending = int(per_cpu["stack_pending"].astype(np.uint64).sum())
        stacks, given = self._generations.fold(drop_stack_tail(drop_keys, per_cpu) if flush else None)
        return replace(counts, stacks=stacks,
                       stacks_lost=MappingProxyType(read_stacks_lost(self._readers["stack_lost"])),
                       sampling=read_stack_sampler(self._readers["sampler"], self._stack_share, pending - given))

    def detach(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None
        self._readers = {}
        self._stacks = False
        self._generations = None
