"""Conntrack trouble per pod: insert failures, table-full drops, clash resolutions.

No BPF here: the kernel already counts these per netns and per CPU (see
profiler/system/conntrack.py), so each interval this source enters pods' netns (one thread
visiting them in turn), reads their statistics and writes the deltas summed over CPUs into
`PodInterval.conntrack`:

    insert_failed  a new connection lost the race to be inserted (same tuple confirmed on
                   another CPU first); the packet was dropped
    drop           packets dropped because conntrack could not track them: table full
                   (and nothing early-droppable) or a failed insert. Each is an skb drop
                   with reason NETFILTER_DROP in nf_hook_slow, which the drops probe shows
                   with its location
    early_drop     entries evicted to make room in a full table
    clash_resolve  clashes the kernel resolved (UDP & co.); absent before 5.9
    chaintoolong   inserts refused for a too-long hash chain; absent before 5.15
    invalid, search_restart, insert

plus levels, named `_now`, which are not to be summed over intervals: `count_now` (the
pod netns' tracked connections), `max_now` (the node-global nf_conntrack_max the count is
held against) and `buckets_now` (the node-global hash table size).

A pod appears only when a counter moved or it tracks connections: a netns without conntrack
rules stays absent. The first reading of a netns is its baseline, so a pod that appears
mid-capture contributes from its second reading on.

Which pods are read in an interval follows profiler/sources/netns_schedule.py: pods whose
statistics moved at their last read every interval, idle pods in turn on a fixed budget
(all of them on a capture's final interval). A pod read after some intervals unread reports
everything it counted meanwhile in the interval of that read.

Where the kernel has kprobes and nf_conntrack is loaded, the conntrack_confirm probe
(profiler/probes/conntrack_confirm.py, kprobe on `__nf_conntrack_confirm`) also counts each
pod's failed confirms where they happen, as `confirm_failed`; elsewhere the probe table says
why it is not attached.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType

from ..errors import NetprofError
from ..kernel.loader import BpfLoader
from ..pods import PodDirectory
from ..probes.base import ProbeStatus
from ..probes.conntrack_confirm import ConntrackConfirmProbe
from ..snapshot import SnapshotFrame
from ..system.conntrack import (
    ConntrackStats, conntrack_loaded, counter_deltas, procfs_stats_available, read_limits,
    read_stats_in_each,
)
from ..system.netns import NetnsResult
from .netns_schedule import NetnsSchedule

COUNTERS = ("insert_failed", "drop", "early_drop", "clash_resolve", "chaintoolong",
            "invalid", "search_restart", "insert")
STATS_PROBE = "conntrack_stats"
VIA_PROCFS = "procfs:/proc/net/stat/nf_conntrack (per netns)"
VIA_NETLINK = "netlink:ctnetlink IPCTNL_MSG_CT_GET_STATS_CPU (per netns, pyroute2)"

PROCFS = "procfs"
NETLINK = "netlink"


def _netlink_errors() -> tuple[type[BaseException], ...]:
    try:
        from pyroute2.netlink.exceptions import NetlinkError
    except ImportError:
        return ()
    return (NetlinkError,)


def choose_stats_reader(root: Path = Path("/")) -> tuple[str | None, str | None]:
    """(reader, None) with reader "procfs" or "netlink", or (None, why neither works)."""
    if procfs_stats_available(root):
        return PROCFS, None
    if not conntrack_loaded(root):
        return None, ("nf_conntrack is not loaded (no /proc/sys/net/netfilter/nf_conntrack_max): "
                      "no traffic is tracked on this node; read as soon as it loads")
    try:
        import pyroute2  # noqa: F401
    except ImportError:
        return None, ("this kernel has no /proc/net/stat/nf_conntrack (CONFIG_NF_CONNTRACK_PROCFS off) "
                      "and pyroute2 is not installed for the netlink fallback (pip install pyroute2)")
    return NETLINK, None


class ConntrackSource:
    name = "conntrack"

    def __init__(self, pods: PodDirectory, root: Path = Path("/"),
                 read_stats: Callable[[Mapping[int, Path], bool], Mapping[int, NetnsResult[ConntrackStats]]]
                 = read_stats_in_each, schedule: NetnsSchedule | None = None,
                 confirm_probe: ConntrackConfirmProbe | None = None):
        self.pods = pods
        self.root = root
        # (netns paths, over netlink?) → stats or error per netns; tests pass fixtures.
        self._read_stats = read_stats
        self.schedule = schedule or NetnsSchedule()
        self._reader: str | None = None
        self._previous: dict[int, ConntrackStats] = {}
        self._skippable: tuple[type[BaseException], ...] = (OSError, ValueError, NetprofError)
        self.confirm_probe = confirm_probe or ConntrackConfirmProbe(root)
        self._confirm_previous: dict[int, int] = {}

    def attach(self, loader: BpfLoader) -> list[ProbeStatus]:
        reader, why_not = choose_stats_reader(self.root)
        if reader is not None:
            self._start(reader)
        via = VIA_NETLINK if reader == NETLINK else VIA_PROCFS
        confirm = self.confirm_probe.attach(loader)
        if confirm.attached:
            self._confirm_previous = self.confirm_probe.read().failed_by_netns()
        return [ProbeStatus(STATS_PROBE, reader is not None, via, why_not), confirm]

    def _confirm_failed_deltas(self) -> dict[int, int]:
        if not self.confirm_probe.attached:
            return {}
        current = self.confirm_probe.read().failed_by_netns()
        deltas = {netns: n - self._confirm_previous.get(netns, 0) for netns, n in current.items()
                  if n > self._confirm_previous.get(netns, 0)}
        self._confirm_previous = current
        return deltas

    def _start(self, reader: str) -> None:
        self._reader = reader
        if reader == NETLINK:
            self._skippable = (OSError, ValueError, NetprofError, *_netlink_errors())
        self._previous = {}
        self._read_due(self.pods.netns_paths(), read_all=True)  # baselines

    def _read_due(self, paths: Mapping[int, Path], read_all: bool) -> dict[int, tuple[ConntrackStats | None, ConntrackStats]]:
        """Read the pods the schedule says are due: pod → (its previous reading, None at first
        sight; this one), which becomes its baseline. Pods no longer listed are forgotten."""
        self._previous = {inode: stats for inode, stats in self._previous.items() if inode in paths}
        results = self._read_stats(self.schedule.due(paths, read_all), self._reader == NETLINK)
        readings: dict[int, tuple[ConntrackStats | None, ConntrackStats]] = {}
        for inode, stats in results.items():
            if isinstance(stats, self._skippable):
                # The netns vanished between listing and reading (normal on a node where pods
                # come and go), nf_conntrack was unloaded meanwhile, or the read hung.
                continue
            if isinstance(stats, BaseException):
                raise stats  # a bug, not the pod's doing
            readings[inode] = (self._previous.get(inode), stats)
            self._previous[inode] = stats
        self.schedule.record(results, moved=[inode for inode, (before, stats) in readings.items()
                                              if before is not None and before != stats])
        return readings

    def collect(self, frame: SnapshotFrame) -> None:
        if self._reader is None:
            reader, _ = choose_stats_reader(self.root)
            if reader is not None:
                self._start(reader)  # nf_conntrack loaded mid-capture: baseline now
            return
        limits = read_limits(self.root)
        confirm_failed = self._confirm_failed_deltas()
        for inode, (before, stats) in self._read_due(self.pods.netns_paths(), frame.final).items():
            if before is None:
                continue
            deltas = counter_deltas(before, stats)
            values = {name: deltas[name] for name in COUNTERS if name in deltas}
            if self.confirm_probe.attached:
                values["confirm_failed"] = confirm_failed.pop(inode, 0)
            if not any(values.values()) and stats.entries == 0:
                continue
            values["count_now"] = stats.entries
            if limits is not None:
                values["max_now"] = limits.max_entries
                values["buckets_now"] = limits.buckets
            frame.pod(inode, conntrack=MappingProxyType(values))
        for inode, failed in confirm_failed.items():
            # A pod whose statistics were not due this interval: the kprobe's count still lands.
            frame.pod(inode, conntrack=MappingProxyType({"confirm_failed": failed}))

    def detach(self) -> None:
        self.confirm_probe.detach()
        self._reader = None
        self._previous = {}
