"""TCP retransmits per network namespace and per flow (bpf/retransmits.bpf.c)."""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import numpy as np

from ..errors import NetprofError
from ..kernel.loader import BpfLoader
from ..kernel.maps import MapLayout, MapReader
from ..kernel.stacks import (
    DEFAULT_STACK_SHARE, STACK_KEY_STATE, STACK_LOST_KEY, STACK_LOST_SLOTS, STACK_SAMPLER, StackFold,
    StackGenerations, StackSampling, StackTail, read_stack_sampler, read_stacks_lost, stack_sampling_cflags,
    write_stacks_paused,
)
from .base import ProbeStatus
from ..kernel.features import tracepoint_fields

TRACEPOINT = "tcp:tcp_retransmit_skb"
MAX_NETNS = 4096
MAX_FLOWS = 16384
# Retransmits come from a handful of kernel paths (RTO timer, fast retransmit, loss probe,
# SYN and SYN-ACK timers) reached from a few dozen callers: 2 generations × 512 stacks
# (~1 MiB) is plenty for one interval each (bpf/stacks.h).
MAX_STACKS = 512
MAX_STACK_KEYS = 8192       # (netns, stack, generation)
STACK_CFLAGS = (
    "-DNETPROF_RETRANSMIT_STACKS",
    f"-DNETPROF_RETRANSMIT_MAX_STACKS={MAX_STACKS}",
    f"-DNETPROF_RETRANSMIT_MAX_STACK_KEYS={MAX_STACK_KEYS}",
)

# Mirrors struct retransmit_flow_key in bpf/retransmits.h.
FLOW_KEY = np.dtype(
    [
        ("netns_inode", "<u4"),
        ("family", "<u2"),
        ("sport", "<u2"),
        ("dport", "<u2"),
        ("state", "u1"),
        ("_pad", "u1"),
        ("saddr", "u1", (16,)),
        ("daddr", "u1", (16,)),
    ]
)
NETNS_KEY = np.dtype([("netns_inode", "<u4")])
# Mirrors struct retransmit_stack_key.
STACK_KEY = np.dtype([("netns_inode", "<u4"), ("stack_id", "<u4"), ("generation", "<u4")])
SLOT_KEY = np.dtype([("slot", "<u4")])
COUNT = np.dtype([("count", "<u8")])
# Mirrors struct retransmit_counts.
COUNTS = np.dtype([("retransmits", "<u8"), ("segments", "<u8")])

TCP_STATES = {
    1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
    6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN",
    11: "CLOSING", 12: "NEW_SYN_RECV",
}


@dataclass(frozen=True)
class RetransmitCounts:
    """Cumulative counts since attach."""

    netns: np.ndarray       # NETNS_KEY
    per_netns: np.ndarray   # COUNTS, aligned with netns
    flows: np.ndarray       # FLOW_KEY
    per_flow: np.ndarray    # COUNTS, aligned with flows
    netns_map_full: int     # retransmits missing from per_netns because the map was full
    # Retransmits per (netns, kernel stack) sampled since the previous read, weighted by the
    # retransmits each walk stands for; empty when stacks are not sampled.
    stacks: StackFold = field(default_factory=lambda: StackFold.empty(STACK_KEY))
    # STACK_LOST_SLOTS → retransmits with no counted stack.
    stacks_lost: Mapping[str, int] = field(default_factory=lambda: MappingProxyType(dict.fromkeys(STACK_LOST_SLOTS, 0)))
    sampling: StackSampling | None = None   # None when stacks are not sampled


class RetransmitProbe:
    name = "tcp_retransmits"
    stacks_name = "retransmit_stacks"

    def __init__(self, stacks: bool = True, stack_share: float = DEFAULT_STACK_SHARE) -> None:
        self._bpf = None
        self._by_netns: MapReader | None = None
        self._by_flow: MapReader | None = None
        self._generations: StackGenerations | None = None
        self._stacks_lost: MapReader | None = None
        self._sampler: MapReader | None = None
        self._key_states: MapReader | None = None
        self._want_stacks = stacks
        self._stack_share = stack_share
        self._stack_cflags = (*STACK_CFLAGS, *stack_sampling_cflags(stack_share))
        self.stacks_status: ProbeStatus | None = None
        self._stacks_paused = False

    def attach(self, loader: BpfLoader) -> ProbeStatus:
        via = f"tracepoint:{TRACEPOINT}"
        base = [f"-DNETPROF_MAX_NETNS={MAX_NETNS}", f"-DNETPROF_MAX_FLOWS={MAX_FLOWS}"]
        # The `err` field exists on newer kernels only: ask the tracepoint, not the version.
        fields = tracepoint_fields(loader.info.tracefs, "tcp/tcp_retransmit_skb")
        if "err" in fields:
            base.append("-DNETPROF_RETRANSMIT_HAS_ERR")
        # `family` too: 5.10 has none. An unreadable format is taken to be a current kernel.
        if "family" in fields or not fields:
            base.append("-DNETPROF_RETRANSMIT_HAS_FAMILY")
        stacks_error: str | None = "not asked for"
        if self._want_stacks:
            try:
                # TRACEPOINT_PROBE attaches at load time.
                self._bpf = loader.compile("retransmits", [*base, *self._stack_cflags])
                stacks_error = None
            except NetprofError as exc:
                stacks_error = str(exc)  # a kernel that refuses stack maps still gets the counts
        if self._bpf is None:
            try:
                self._bpf = loader.compile("retransmits", base)
            except NetprofError as exc:
                if self._want_stacks:
                    self.stacks_status = ProbeStatus(self.stacks_name, False, f"bpf_get_stackid at {via}", stacks_error)
                return ProbeStatus(self.name, False, via, str(exc))
        if self._want_stacks:
            self.stacks_status = ProbeStatus(self.stacks_name, stacks_error is None, f"bpf_get_stackid at {via}",
                                             stacks_error)
        self._by_netns = MapReader(self._bpf[b"retransmits_by_netns"], MapLayout(NETNS_KEY, COUNTS))
        self._by_flow = MapReader(self._bpf[b"retransmits_by_flow"], MapLayout(FLOW_KEY, COUNTS))
        if stacks_error is None:
            table = self._bpf.get_table
            self._generations = StackGenerations(
                table(b"retransmits_by_stack"),
                (table(b"retransmit_stack_traces_0"), table(b"retransmit_stack_traces_1")),
                table(b"retransmit_stack_generation"), STACK_KEY)
            self._stacks_lost = MapReader(table(b"retransmit_stacks_lost"), MapLayout(STACK_LOST_KEY, COUNT, percpu=True))
            self._sampler = MapReader(table(b"retransmit_stack_sampler"), MapLayout(SLOT_KEY, STACK_SAMPLER, percpu=True))
            self._key_states = MapReader(table(b"retransmit_stack_keys"), MapLayout(NETNS_KEY, STACK_KEY_STATE, percpu=True))
            if self._stacks_paused:
                write_stacks_paused(table(b"retransmit_stacks_paused"), True)
        return ProbeStatus(self.name, True, via)

    def pause_stacks(self, paused: bool) -> None:
        """Stack walks off (the quiet tier) or on; retransmits are counted either way.
        Before attach it sets how the program starts."""
        self._stacks_paused = paused
        if self._bpf is not None and self._generations is not None:
            write_stacks_paused(self._bpf.get_table(b"retransmit_stacks_paused"), paused)

    def read(self, flush: bool = False) -> RetransmitCounts:
        """Cumulative counts, and the stacks sampled since the previous read (flush: as in
        DropProbe.read, each pod's pending retransmits go to its last stack)."""
        if self._bpf is None:
            raise RuntimeError("read() before a successful attach()")
        netns, per_netns = self._by_netns.read()
        flows, per_flow = self._by_flow.read()
        full = int(self._bpf[b"retransmit_map_full"][0].value)
        if self._generations is None or self._stacks_lost is None or self._sampler is None or self._key_states is None:
            return RetransmitCounts(netns, per_netns, flows, per_flow, full)
        pods, states = self._key_states.read()
        pending = int(states["pending"].astype(np.uint64).sum())
        tail = None
        if flush:
            rows, cpus = np.nonzero(states["pending"] > 0) if len(pods) else (np.zeros(0, int), np.zeros(0, int))
            state = states[rows, cpus]
            keys = np.zeros(len(rows), STACK_KEY)
            keys["netns_inode"], keys["stack_id"], keys["generation"] = (
                pods["netns_inode"][rows], state["stack_id"], state["epoch"] & 1)
            tail = StackTail(keys, state["epoch"].copy(), state["pending"].astype(np.int64))
        stacks, given = self._generations.fold(tail)
        return RetransmitCounts(netns, per_netns, flows, per_flow, full, stacks,
                                MappingProxyType(read_stacks_lost(self._stacks_lost)),
                                read_stack_sampler(self._sampler, self._stack_share, pending - given))

    def detach(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None
        self._generations = None
        self._stacks_lost = self._sampler = self._key_states = None
