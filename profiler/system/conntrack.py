"""Connection-tracking statistics of one network namespace, and the table's size limits.

Conntrack keeps one `struct ip_conntrack_stat` per CPU per netns. Two ways to read it:

- `/proc/net/stat/nf_conntrack` (CONFIG_NF_CONNTRACK_PROCFS): a header line naming the
  columns, then one line of hex numbers per possible CPU. It answers for the netns of the
  thread that reads it, so reading it from inside a pod's netns (`run_in_netns`,
  `read_in_each_netns`) gives that pod's.
- ctnetlink (`IPCTNL_MSG_CT_GET_STATS_CPU`, pyroute2's `Conntrack().stat()`): the same
  counters, named by attribute; for kernels built without the procfs file. A netlink socket
  is bound to the netns it was created in, so the reader opens its own inside the pod's
  netns, and closes it before the visit moves on to the next.

The columns changed over the years, which is why they are read from the header, never by
position: 5.9 renamed `searched` to `clashres` (clash resolutions, `clash_resolve`), 5.15
renamed `delete_list` to `chainlength` (inserts refused for a too-long hash chain,
`chaintoolong`), kernels before 4.x lack `search_restart`, and `searched`, `new`, `ignore`
and `delete` are printed as constant 0 since those counters were removed. Names are
normalised to the kernel's struct field names (also netlink's), so both readers agree.

`entries` is not a counter: it is the netns' number of tracked connections, a level, printed
identically on every CPU's line. `nf_conntrack_max` and `nf_conntrack_buckets` are
node-global (read-only inside a child netns), while the count is per netns.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

from ..kernel.kernel_files import read_kernel_text

from .netns import NetnsResult, read_in_each_netns, read_proc_net, run_in_netns

STAT_FILE = "stat/nf_conntrack"  # relative to /proc/net (of the reading thread's netns)
NETFILTER_SYSCTL_DIR = "proc/sys/net/netfilter"

# Column or netlink names → the kernel's `struct ip_conntrack_stat` field names.
_CANONICAL_NAMES = {
    "clashres": "clash_resolve",
    "chainlength": "chaintoolong",
    "chain_toolong": "chaintoolong",
    "icmp_error": "error",  # the field counts every l4 tracker error, not only ICMP's
}
ENTRIES = "entries"
# The per-CPU counters are `unsigned int`: they wrap at 2^32.
COUNTER_MODULUS = 1 << 32


def canonical_name(name: str) -> str:
    return _CANONICAL_NAMES.get(name, name)


@dataclass(frozen=True)
class ConntrackStats:
    """Cumulative conntrack counters of one netns, one mapping per CPU, plus its entry count."""

    entries: int                                # level: connections tracked in this netns now
    per_cpu: tuple[Mapping[str, int], ...]      # counters by canonical name, in CPU order

    @property
    def counter_names(self) -> tuple[str, ...]:
        return tuple(self.per_cpu[0]) if self.per_cpu else ()

    def totals(self) -> dict[str, int]:
        """Every counter summed over CPUs (cumulative since the netns was created)."""
        return {name: sum(cpu.get(name, 0) for cpu in self.per_cpu) for name in self.counter_names}


def parse_stat_file(text: str) -> ConntrackStats:
    """Parse /proc/net/stat/nf_conntrack; raises ValueError when it is not that file."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    if not lines or lines[0][0] != ENTRIES:
        raise ValueError("not a conntrack statistics file: the header does not start with 'entries'")
    names = [canonical_name(name) for name in lines[0]]
    entries = 0
    per_cpu: list[Mapping[str, int]] = []
    for row in lines[1:]:
        if len(row) != len(names):
            raise ValueError(f"conntrack statistics row has {len(row)} columns, header has {len(names)}")
        values = dict(zip(names, (int(field, 16) for field in row)))
        entries = values.pop(ENTRIES)
        per_cpu.append(MappingProxyType(values))
    return ConntrackStats(entries=entries, per_cpu=tuple(per_cpu))


def stats_from_netlink(rows: list[Mapping[str, int]], entries: int) -> ConntrackStats:
    """Build stats from pyroute2's `Conntrack().stat()` rows (`{'cpu': 0, 'drop': 3, …}`)."""
    per_cpu = []
    for row in sorted(rows, key=lambda r: r.get("cpu", 0)):
        per_cpu.append(MappingProxyType({canonical_name(name): int(value)
                                         for name, value in row.items() if name != "cpu"}))
    return ConntrackStats(entries=entries, per_cpu=tuple(per_cpu))


def counter_deltas(previous: ConntrackStats | None, current: ConntrackStats) -> dict[str, int]:
    """What each counter grew by since `previous`, summed over CPUs.

    Each CPU's counter is differenced modulo 2^32 (they wrap). A difference above 2^31 is
    read as a reset, not a wrap: the netns was destroyed and its inode reused by a new one,
    whose counters started from zero.
    """
    if previous is None or len(previous.per_cpu) != len(current.per_cpu):
        return current.totals()
    deltas = dict.fromkeys(current.counter_names, 0)
    for before, now in zip(previous.per_cpu, current.per_cpu):
        for name, value in now.items():
            delta = (value - before.get(name, 0)) % COUNTER_MODULUS
            deltas[name] += value if delta >= COUNTER_MODULUS // 2 else delta
    return deltas


def read_stats_here() -> ConntrackStats:
    """Statistics of the calling thread's netns, from procfs. FileNotFoundError when
    nf_conntrack is not loaded or the kernel has no procfs statistics."""
    return parse_stat_file(read_proc_net(STAT_FILE))


def read_stats_netlink_here() -> ConntrackStats:
    """Statistics of the calling thread's netns, over ctnetlink (pyroute2)."""
    from pyroute2 import Conntrack  # imported on first use: a procfs-only run never pays for it

    with Conntrack() as conntrack:
        return stats_from_netlink(conntrack.stat(), int(conntrack.count() or 0))


def read_netns_stats(netns: Path | str, netlink: bool = False) -> ConntrackStats:
    """Statistics of the netns at `netns` (a /run/netns/<name> or /proc/<pid>/ns/net path)."""
    return run_in_netns(netns, read_stats_netlink_here if netlink else read_stats_here)


def read_stats_in_each(paths: Mapping[int, Path], netlink: bool = False) -> dict[int, NetnsResult[ConntrackStats]]:
    """Statistics of each netns of `paths`, read from one thread that visits them in turn."""
    return read_in_each_netns(paths, read_stats_netlink_here if netlink else read_stats_here)


@dataclass(frozen=True)
class ConntrackLimits:
    """The node-global size of the conntrack table (levels, not counters)."""

    max_entries: int   # net.netfilter.nf_conntrack_max: per-netns count above this drops new flows
    buckets: int       # net.netfilter.nf_conntrack_buckets: hash table size


def read_limits(root: Path = Path("/")) -> ConntrackLimits | None:
    """None when nf_conntrack is not loaded (its sysctls do not exist then)."""
    directory = root / NETFILTER_SYSCTL_DIR
    try:
        return ConntrackLimits(
            max_entries=int(read_kernel_text(directory / "nf_conntrack_max")),
            buckets=int(read_kernel_text(directory / "nf_conntrack_buckets")),
        )
    except FileNotFoundError:
        return None


def conntrack_loaded(root: Path = Path("/")) -> bool:
    return (root / NETFILTER_SYSCTL_DIR / "nf_conntrack_max").exists()


def procfs_stats_available(root: Path = Path("/")) -> bool:
    # /proc/net is this process's netns; the file exists in every netns or in none.
    return (root / "proc/net" / STAT_FILE).exists()
