"""TCP retransmits per network namespace and per flow (bpf/retransmits.bpf.c)."""
from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Mapping

import numpy as np

from ..errors import NetprofError
from ..kernel.loader import BpfLoader
from ..kernel.maps import MapLayout, MapReader
from ..kernel.stacks import STACK_LOST_KEY, STACK_LOST_SLOTS, read_stacks_lost, stack_budget_cflags
from .base import ProbeStatus
from ..kernel.features import tracepoint_fields

TRACEPOINT = "tcp:tcp_retransmit_skb"
MAX_NETNS = 4096
MAX_FLOWS = 16384
# Retransmits come from a handful of kernel paths (RTO timer, fast retransmit, loss probe,
# SYN and SYN-ACK timers) reached from a few dozen callers: 1024 stacks (~1 MiB) is plenty.
MAX_STACKS = 1024
MAX_STACK_KEYS = 8192       # (netns, stack) pairs
STACK_CFLAGS = (
    "-DNETPROF_RETRANSMIT_STACKS",
    f"-DNETPROF_RETRANSMIT_MAX_STACKS={MAX_STACKS}",
    f"-DNETPROF_RETRANSMIT_MAX_STACK_KEYS={MAX_STACK_KEYS}",
    *stack_budget_cflags(),
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
STACK_KEY = np.dtype([("netns_inode", "<u4"), ("stack_id", "<u4")])
STACK_COUNT = np.dtype([("count", "<u8")])
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
    # Retransmits per (netns, kernel stack id); empty when stacks are not sampled.
    stack_keys: np.ndarray = field(default_factory=lambda: np.zeros(0, STACK_KEY))
    per_stack: np.ndarray = field(default_factory=lambda: np.zeros(0, STACK_COUNT))
    # STACK_LOST_SLOTS → retransmits with no counted stack.
    stacks_lost: Mapping[str, int] = field(default_factory=lambda: MappingProxyType(dict.fromkeys(STACK_LOST_SLOTS, 0)))


class RetransmitProbe:
    name = "tcp_retransmits"
    stacks_name = "retransmit_stacks"

    def __init__(self, stacks: bool = True) -> None:
        self._bpf = None
        self._by_netns: MapReader | None = None
        self._by_flow: MapReader | None = None
        self._by_stack: MapReader | None = None
        self._stacks_lost: MapReader | None = None
        self._want_stacks = stacks
        self.stacks_status: ProbeStatus | None = None

    def attach(self, loader: BpfLoader) -> ProbeStatus:
        via = f"tracepoint:{TRACEPOINT}"
        base = [f"-DNETPROF_MAX_NETNS={MAX_NETNS}", f"-DNETPROF_MAX_FLOWS={MAX_FLOWS}"]
        # The `err` field exists on newer kernels only: ask the tracepoint, not the version.
        if "err" in tracepoint_fields(loader.info.tracefs, "tcp/tcp_retransmit_skb"):
            base.append("-DNETPROF_RETRANSMIT_HAS_ERR")
        stacks_error: str | None = "not asked for"
        if self._want_stacks:
            try:
                # TRACEPOINT_PROBE attaches at load time.
                self._bpf = loader.compile("retransmits", [*base, *STACK_CFLAGS])
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
            self._by_stack = MapReader(self._bpf[b"retransmits_by_stack"], MapLayout(STACK_KEY, STACK_COUNT))
            self._stacks_lost = MapReader(self._bpf[b"retransmit_stacks_lost"], MapLayout(STACK_LOST_KEY, STACK_COUNT, percpu=True))
        return ProbeStatus(self.name, True, via)

    def read(self) -> RetransmitCounts:
        if self._bpf is None:
            raise RuntimeError("read() before a successful attach()")
        netns, per_netns = self._by_netns.read()
        flows, per_flow = self._by_flow.read()
        full = int(self._bpf[b"retransmit_map_full"][0].value)
        if self._by_stack is None or self._stacks_lost is None:
            return RetransmitCounts(netns, per_netns, flows, per_flow, full)
        stack_keys, per_stack = self._by_stack.read()
        return RetransmitCounts(netns, per_netns, flows, per_flow, full, stack_keys, per_stack,
                                MappingProxyType(read_stacks_lost(self._stacks_lost)))

    def stack_addresses(self, stack_id: int) -> list[int]:
        """Return addresses of one counted stack, innermost first (KeyError if unknown)."""
        if self._bpf is None or self._by_stack is None:
            raise KeyError(stack_id)
        return list(self._bpf[b"retransmit_stack_traces"].walk(stack_id))

    def detach(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None
        self._by_stack = self._stacks_lost = None
