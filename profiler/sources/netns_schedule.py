"""Which pods' network namespaces a per-interval reader visits: the active ones every
interval, the idle ones in turn on a fixed budget.

Entering a namespace and reading its counters costs the same for a pod that did nothing as
for a busy one, so reading every pod every interval makes the sampler's work grow with all
pods on the node rather than with the active ones (1000 idle namespaces: ~550 ms of CPU per
1 s interval). The readers that use this schedule read cumulative counters, so reading an
idle pod less often loses nothing: whatever it counted meanwhile is a delta at its next
read, attributed to that interval. The rule:

- a pod never read is read at once: its first reading is its baseline;
- a pod is hot — read every interval — when its counters moved at its last read, or when a
  caller says so (`heat`, e.g. the listen source for a pod whose accept queue is busy);
- every other pod is idle: up to `idle_reads_per_interval` of them are read per interval,
  least recently read first, so each is read at least every ceil(idle / budget) intervals;
- `due(..., read_all=True)` reads every pod: the last interval of a capture leaves nothing
  behind in the counters;
- a pod no longer listed is forgotten.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path

# Up to this many idle pods are read each interval, per reader. A netstat read costs ~0.25 ms
# of CPU (setns, /proc/net/snmp and /proc/net/netstat parsed; measured on 6.18), so the
# budget holds idle pods to ~15 ms per interval however many there are, while a node with up
# to 64 idle pods still has every pod read every interval, as before there was a budget;
# with 1000 idle pods each is read every 16 intervals.
IDLE_READS_PER_INTERVAL = 64


class NetnsSchedule:
    def __init__(self, idle_reads_per_interval: int = IDLE_READS_PER_INTERVAL):
        self.idle_reads_per_interval = idle_reads_per_interval
        # Every pod read at least once, least recently read first (a dict keeps insertion
        # order; a read moves the pod to the end): the front is the idle round-robin's next.
        self._by_last_read: dict[int, None] = {}
        self._hot: set[int] = set()

    def due(self, paths: Mapping[int, Path], read_all: bool = False) -> dict[int, Path]:
        """The pods to read this interval, out of every pod listed now (`paths`: netns
        inode → path). Pods not listed any more are forgotten."""
        self._forget(paths)
        if read_all:
            return dict(paths)
        due = {inode: path for inode, path in paths.items()
               if inode in self._hot or inode not in self._by_last_read}
        budget = self.idle_reads_per_interval
        for inode in self._by_last_read:
            if budget <= 0:
                break
            if inode not in due:
                due[inode] = paths[inode]
                budget -= 1
        return due

    def record(self, read: Iterable[int], moved: Iterable[int]) -> None:
        """After a pass: `read`, every pod visited (whatever came of it: a failed read is
        not retried ahead of the others); `moved`, those whose counters changed, which are
        read again next interval."""
        for inode in read:
            self._by_last_read.pop(inode, None)
            self._by_last_read[inode] = None
            self._hot.discard(inode)
        self._hot.update(moved)

    def heat(self, inodes: Iterable[int]) -> None:
        """Read these pods next interval whatever their counters did (a caller knows they
        are busy from another signal)."""
        self._hot.update(inodes)

    def _forget(self, paths: Mapping[int, Path]) -> None:
        for inode in [inode for inode in self._by_last_read if inode not in paths]:
            del self._by_last_read[inode]
        self._hot.intersection_update(paths)
