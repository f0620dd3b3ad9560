"""The SNMP and netstat counters of one network namespace (/proc/net/snmp, /proc/net/netstat).

Both files are pairs of lines: a header `TcpExt: SyncookiesSent ListenOverflows …` and a
value line `TcpExt: 0 1141 …`. Names come out as `TcpExt.ListenOverflows`, `Tcp.RetransSegs`.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .netns import NetnsResult, read_in_each_netns, read_proc_net


def parse_counter_pairs(text: str) -> dict[str, int]:
    counters: dict[str, int] = {}
    lines = [line.split() for line in text.splitlines() if line.strip()]
    for header, values in zip(lines[::2], lines[1::2]):
        if not header or not values or header[0] != values[0]:
            continue  # a malformed pair: skip it, keep the rest
        prefix = header[0].rstrip(":")
        for name, value in zip(header[1:], values[1:]):
            try:
                counters[f"{prefix}.{name}"] = int(value)
            except ValueError:
                continue
    return counters


def read_counters_here() -> dict[str, int]:
    """Counters of the calling thread's netns."""
    counters = parse_counter_pairs(read_proc_net("snmp"))
    counters.update(parse_counter_pairs(read_proc_net("netstat")))
    return counters


def read_counters_in_each(paths: Mapping[int, Path]) -> dict[int, NetnsResult[dict[str, int]]]:
    """Counters of each netns of `paths`, read from one thread that visits them in turn."""
    return read_in_each_netns(paths, read_counters_here)
