"""IP addresses as the kernel lays them out (struct sock_common, inet_diag, the BPF flow
keys): 16 bytes, an IPv4 address in the first 4."""
from __future__ import annotations

import socket
from collections.abc import Sequence


def format_address(family: int, raw: bytes | Sequence[int]) -> str:
    """The text form of an AF_INET or AF_INET6 address held in a 16-byte field."""
    data = bytes(raw)
    if family == socket.AF_INET6:
        return socket.inet_ntop(socket.AF_INET6, data[:16])
    return socket.inet_ntop(socket.AF_INET, data[:4])
