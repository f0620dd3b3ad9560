"""Per-CPU packet-processing counters from /proc/net/softnet_stat.

One line per online CPU, hex columns, printed by softnet_seq_show() in net/core/net-procfs.c:

    0  processed          packets taken off the backlog / NAPI poll on this CPU
    1  dropped            backlog full (net.core.netdev_max_backlog)
    2  time_squeeze       net_rx_action() stopped with work left (netdev_budget or
                          netdev_budget_usecs ran out)
    3-7                   always 0 (was fastroute)
    8                     cpu_collision before 5.10 (long meaningless), 0 since; not read
    9  received_rps       RPS/RFS IPIs received to process packets     (2.6.35+, 10 columns)
    10 flow_limit_count   packets dropped by the flow limiter          (3.11+, 11 columns)
    11 backlog_len        input_pkt_queue + process_queue length now   (5.10+ and RHEL 8.5's
                                                                        4.18; 13 columns)
    12 cpu                the CPU this line is for                     (5.10+)
    13 input_qlen         input_pkt_queue length now                   (6.4+, 15 columns)
    14 process_qlen       process_queue length now                     (6.4+)

Offline CPUs get no line, so before 5.10 the line index is the index among online CPUs, not
the CPU number. Columns a newer kernel appends are ignored.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ..kernel.root_files import read_text_in_root
from .cpus import read_cpus_online

# The kernel prints these counters as 32-bit values; they wrap on busy boxes within days.
COUNTER_MODULUS = 1 << 32

_HEX_COLUMN = re.compile(r"^[0-9a-fA-F]{1,16}$")
_COLUMNS_BEFORE_RPS = 9     # processed, dropped, time_squeeze, 5 x fastroute, cpu_collision
_COLUMN_RECEIVED_RPS = 9
_COLUMN_FLOW_LIMIT = 10
_COLUMN_BACKLOG_LEN = 11
_COLUMN_CPU = 12
_COLUMN_INPUT_QLEN = 13
_COLUMN_PROCESS_QLEN = 14


@dataclass(frozen=True)
class SoftnetCpu:
    """One CPU's line. Counters are cumulative since boot (mod 2**32); None = this kernel's
    softnet_stat has no such column."""

    cpu: int
    processed: int
    dropped: int
    time_squeeze: int
    received_rps: int | None
    flow_limit_count: int | None
    backlog_len: int | None       # packets waiting right now, not a counter
    input_qlen: int | None = None
    process_qlen: int | None = None


@dataclass(frozen=True)
class SoftnetDelta:
    """What happened on one CPU between two reads: counter differences (wrap-safe), and the
    backlog lengths as the second read saw them."""

    cpu: int
    processed: int
    dropped: int
    time_squeeze: int
    received_rps: int | None
    flow_limit_count: int | None
    backlog_len: int | None


def _column(values: list[int], index: int) -> int | None:
    return values[index] if len(values) > index else None


def parse_softnet_stat(text: str, online_cpus: Iterable[int] | None = None) -> tuple[SoftnetCpu, ...]:
    """Parse /proc/net/softnet_stat.

    online_cpus (from /sys/devices/system/cpu/online) places the lines of kernels before 5.10,
    which do not print the CPU number: the i-th line is the i-th online CPU. Without it, or if
    it does not match the line count (a CPU went on- or offline in between), the line index is
    used. Lines that are not hex columns, or too short, are skipped.
    """
    parsed: list[list[int]] = []
    for line in text.splitlines():
        columns = line.split()
        # int(x, 16) alone would also take "0x10", "+1" and "1_0".
        if len(columns) < _COLUMNS_BEFORE_RPS or not all(_HEX_COLUMN.match(c) for c in columns):
            continue
        parsed.append([int(column, 16) for column in columns])

    online: Sequence[int] = sorted(online_cpus) if online_cpus is not None else ()
    by_online_position = len(online) == len(parsed)
    result: list[SoftnetCpu] = []
    for line_index, values in enumerate(parsed):
        cpu = _column(values, _COLUMN_CPU)
        if cpu is None:
            cpu = online[line_index] if by_online_position else line_index
        result.append(
            SoftnetCpu(
                cpu=cpu,
                processed=values[0],
                dropped=values[1],
                time_squeeze=values[2],
                received_rps=_column(values, _COLUMN_RECEIVED_RPS),
                flow_limit_count=_column(values, _COLUMN_FLOW_LIMIT),
                backlog_len=_column(values, _COLUMN_BACKLOG_LEN),
                input_qlen=_column(values, _COLUMN_INPUT_QLEN),
                process_qlen=_column(values, _COLUMN_PROCESS_QLEN),
            )
        )
    return tuple(result)


def read_softnet(root: Path = Path("/")) -> tuple[SoftnetCpu, ...]:
    """softnet_stat of the machine at root; () when it cannot be read."""
    # /proc/net is a link to self/net; read_text_in_root follows it inside root.
    text = read_text_in_root(root, "proc/net/softnet_stat")
    if text is None:
        return ()
    return parse_softnet_stat(text, read_cpus_online(root) or None)


def _counter_delta(before: int | None, after: int | None) -> int | None:
    if before is None or after is None:
        return None
    return (after - before) % COUNTER_MODULUS


def softnet_deltas(before: Iterable[SoftnetCpu], after: Iterable[SoftnetCpu]) -> dict[int, SoftnetDelta]:
    """Per CPU, what changed from `before` to `after`. CPUs in only one of the two reads (went
    on- or offline in between) are left out: there is no interval to speak of for them."""
    earlier = {cpu.cpu: cpu for cpu in before}
    deltas: dict[int, SoftnetDelta] = {}
    for later in after:
        first = earlier.get(later.cpu)
        if first is None:
            continue
        deltas[later.cpu] = SoftnetDelta(
            cpu=later.cpu,
            processed=(later.processed - first.processed) % COUNTER_MODULUS,
            dropped=(later.dropped - first.dropped) % COUNTER_MODULUS,
            time_squeeze=(later.time_squeeze - first.time_squeeze) % COUNTER_MODULUS,
            received_rps=_counter_delta(first.received_rps, later.received_rps),
            flow_limit_count=_counter_delta(first.flow_limit_count, later.flow_limit_count),
            backlog_len=later.backlog_len,
        )
    return dict(sorted(deltas.items()))
