"""The SNMP and netstat counters of one network namespace (/proc/net/snmp, /proc/net/netstat).

Both files are pairs of lines: a header `TcpExt: SyncookiesSent ListenOverflows …` and a
value line `TcpExt: 0 1141 …`. Names come out as `TcpExt.ListenOverflows`, `Tcp.RetransSegs`.
"""
from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

from .netns import NetnsResult, read_in_each_netns, read_proc_net


def parse_counter_pairs(text: str, wanted: Collection[str] | None = None) -> dict[str, int]:
    """Every counter of the text, or only the `wanted` ones ("TcpExt.ListenOverflows", …):
    a pod's files hold ≈300 counters and a source tracks a handful, read every interval in
    every pod."""
    by_prefix: dict[str, set[str]] | None = None
    if wanted is not None:
        by_prefix = {}
        for full in wanted:
            prefix, _, name = full.partition(".")
            by_prefix.setdefault(prefix, set()).add(name)
    counters: dict[str, int] = {}
    lines = [line.split() for line in text.splitlines() if line.strip()]
    for header, values in zip(lines[::2], lines[1::2]):
        if not header or not values or header[0] != values[0]:
            continue  # a malformed pair: skip it, keep the rest
        prefix = header[0].rstrip(":")
        names = by_prefix.get(prefix) if by_prefix is not None else None
        if by_prefix is not None and not names:
            continue
        for name, value in zip(header[1:], values[1:]):
            if names is not None and name not in names:
                continue
            try:
                counters[f"{prefix}.{name}"] = int(value)
            except ValueError:
                continue
    return counters


def read_counters_here(wanted: Collection[str] | None = None) -> dict[str, int]:
    """Counters of the calling thread's netns (only the `wanted` ones when given)."""
    counters = parse_counter_pairs(read_proc_net("snmp"), wanted)
    counters.update(parse_counter_pairs(read_proc_net("netstat"), wanted))
    return counters


def read_counters_in_each(paths: Mapping[int, Path],
                          wanted: Collection[str] | None = None) -> dict[int, NetnsResult[dict[str, int]]]:
    """Counters of each netns of `paths`, read from one thread that visits them in turn."""
    return read_in_each_netns(paths, lambda: read_counters_here(wanted))
