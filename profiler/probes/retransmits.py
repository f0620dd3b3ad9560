"""TCP retransmits per network namespace and per flow (bpf/retransmits.bpf.c)."""
from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

import numpy as np

from ..errors import NetprofError
from ..kernel.loader import BpfLoader
from ..kernel.maps import MapLayout, MapReader
from .base import ProbeStatus

TRACEPOINT = "tcp:tcp_retransmit_skb"
MAX_NETNS = 4096
MAX_FLOWS = 16384

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


def format_address(family: int, raw: np.ndarray) -> str:
    if family == socket.AF_INET6:
        return str(ipaddress.IPv6Address(bytes(raw[:16])))
    return str(ipaddress.IPv4Address(bytes(raw[:4])))


class RetransmitProbe:
    name = "tcp_retransmits"

    def __init__(self) -> None:
        self._bpf = None
        self._by_netns: MapReader | None = None
        self._by_flow: MapReader | None = None

    def attach(self, loader: BpfLoader) -> ProbeStatus:
        try:
            # TRACEPOINT_PROBE attaches at load time.
            self._bpf = loader.compile(
                "retransmits",
                [f"-DNETPROF_MAX_NETNS={MAX_NETNS}", f"-DNETPROF_MAX_FLOWS={MAX_FLOWS}"],
            )
        except NetprofError as exc:
            return ProbeStatus(self.name, False, f"tracepoint:{TRACEPOINT}", str(exc))
        self._by_netns = MapReader(self._bpf[b"retransmits_by_netns"], MapLayout(NETNS_KEY, COUNTS))
        self._by_flow = MapReader(self._bpf[b"retransmits_by_flow"], MapLayout(FLOW_KEY, COUNTS))
        return ProbeStatus(self.name, True, f"tracepoint:{TRACEPOINT}")

    def read(self) -> RetransmitCounts:
        if self._bpf is None:
            raise RuntimeError("read() before a successful attach()")
        netns, per_netns = self._by_netns.read()
        flows, per_flow = self._by_flow.read()
        full = int(self._bpf[b"retransmit_map_full"][0].value)
        return RetransmitCounts(netns, per_netns, flows, per_flow, full)

    def detach(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None
