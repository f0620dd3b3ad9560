"""Listen-queue overflows per pod and per listening socket.

No single hook sees them all (measured on 6.18): a SYN refused because the accept queue
is full is released with consume_skb, so `skb:kfree_skb` never reports it — a listen(2)
server that never accepts drove TcpExtListenOverflows to 1141 in 6 s with zero
TCP_LISTEN_OVERFLOW drops. The drop reason only covers the final-ACK path. So this source
combines, per pod (network namespace):

- the pod's own counters (/proc/net/netstat, /proc/net/snmp read inside its netns):
  ListenOverflows, ListenDrops, TCPReqQFullDrop, … — exact, but per pod, not per socket.
  Pods whose counters moved (or whose queues are busy) are read every interval, idle pods
  in turn on a budget (profiler/sources/netns_schedule.py): an idle pod's first overflow
  may land in the interval of its next read, never lost;
- inet_diag, sampled in the pod's netns every 100 ms while its queues are busy or its
  overflow counters move (every second otherwise): each listener's accept-queue depth
  (peak) and limit, and the samples in which it was full — names the socket;
- syscalls:sys_enter_listen: the backlog the application asked for, joined to the
  listener by socket inode; and the pod's net.core.somaxconn: which of the two is the limit;
- TCP_LISTEN_OVERFLOW drops per (netns, port), where the drops source runs: it charges each
  such drop to the listener in the tracepoint's rx_sk and writes them into the frame
  (`frame.listen_overflow_drops`). The two exchange nothing else, and this source reads them
  in a `when_collected` callback, so the order of the sources does not matter.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

from ..errors import NetprofError
from ..kernel.loader import BpfLoader
from ..pods import PodDirectory
from ..probes.base import ProbeStatus
from ..probes.listen import ListenBacklogProbe, ListenCalls, socket_inode
from ..probes.listen_syn_path import ListenSynPathProbe, drops_by_listener
from ..snapshot import UNKNOWN_LISTENER_ADDRESS, Listener, SnapshotFrame
from ..system.listeners import ListenerQueue, ListenerSampler, NetnsListeners, NetnsQueues, open_diag_socket
from ..system.netns import BatchReader
from ..system.netstat import read_counters_in_each
from .netns_schedule import NetnsSchedule

# The pod counters this source reports. The listen ones are its own signal; the others
# (segments sent and retransmitted, UDP receive-buffer and TCP socket-backlog drops) come
# along because they are read in the same pass and other detectors want them per pod
# (the retransmit detector's ratio is RetransSegs / OutSegs).
NETSTAT_COUNTERS = (
    "TcpExt.ListenOverflows",
    "TcpExt.ListenDrops",
    "TcpExt.TCPReqQFullDrop",
    "TcpExt.TCPReqQFullDoCookies",
    "TcpExt.SyncookiesSent",
    "Tcp.OutSegs",
    "Tcp.RetransSegs",
    "Udp.RcvbufErrors",
    "TcpExt.TCPBacklogDrop",
)
# Any of these moving makes every listener of the pod worth reporting, quiet ones included:
# the counter says the pod overflowed, the listener list says which sockets could have.
LISTEN_PRESSURE_COUNTERS = ("TcpExt.ListenOverflows", "TcpExt.ListenDrops", "TcpExt.TCPReqQFullDrop")
DEFAULT_SAMPLE_PERIOD_S = 0.1        # pods whose queues are busy or whose counters moved
DEFAULT_IDLE_SAMPLE_PERIOD_S = 1.0   # every other pod
# A resolved backlog is forgotten once its socket has not been seen listening for this
# long: longer than the idle sampling period, so a quiet listener keeps it.
BACKLOG_GRACE_S = 30.0


class NetnsCounterDeltas:
    """Per-netns counter deltas between reads; the first sight of a netns is its baseline.

    Which pods are read in an update is the schedule's call (profiler/sources/netns_schedule.py):
    active pods every interval, idle ones in turn. A pod not read keeps its previous
    reading, so its next delta covers every interval since.
    """

    def __init__(self, names: tuple[str, ...] = NETSTAT_COUNTERS,
                 read_counters: BatchReader[Mapping[str, int]] | None = None,
                 schedule: NetnsSchedule | None = None):
        self.names = names
        wanted = frozenset(names)
        self._read = read_counters or (lambda paths: read_counters_in_each(paths, wanted))
        self.schedule = schedule or NetnsSchedule()
        self._previous: dict[int, dict[str, int]] = {}
        self.read_s = 0.0      # wall time spent reading, cumulative
        self.reads = 0

    def update(self, paths: Mapping[int, Path], read_all: bool = False) -> dict[int, dict[str, int]]:
        """Deltas since each pod's previous read, for the pods read now (all of `paths` when
        `read_all`) whose tracked counters changed."""
        started = time.perf_counter()
        self._previous = {inode: counters for inode, counters in self._previous.items() if inode in paths}
        due = self.schedule.due(paths, read_all)
        changed: dict[int, dict[str, int]] = {}
        results = self._read(due)
        for inode, counters in results.items():
            if isinstance(counters, (OSError, NetprofError)):
                # The pod went away between listing and reading (normal), or its read hung.
                continue
            if isinstance(counters, BaseException):
                raise counters  # a bug, not the pod's doing
            self.reads += 1
            now = {name: counters[name] for name in self.names if name in counters}
            before = self._previous.get(inode)
            self._previous[inode] = now
            if before is None:
                continue
            deltas = {}
            for name, value in now.items():
                # A counter that went down belongs to a new netns that reused the inode.
                delta = value - before.get(name, 0)
                delta = value if delta < 0 else delta
                if delta:
                    deltas[name] = delta
            if deltas:
                changed[inode] = deltas
        self.schedule.record(results, moved=changed)
        self.read_s += time.perf_counter() - started
        return changed


class RequestedBacklogs:
    """Socket inode → the backlog its application passed to listen()."""

    def __init__(self, proc: Path = Path("/proc")):
        self._proc = proc
        self._resolved: dict[tuple[int, int], int] = {}   # (tgid, fd) → called_ns handled
        self._by_inode: dict[int, int] = {}
        self._live_at: dict[int, float] = {}              # inode → last seen listening (monotonic s)

    def update(self, calls: ListenCalls, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        resolved: dict[tuple[int, int], int] = {}
        for key, call in zip(calls.keys.tolist(), calls.calls.tolist()):
            tgid, fd = key
            backlog, _calls, called_ns = call
            resolved[(tgid, fd)] = called_ns
            if self._resolved.get((tgid, fd)) == called_ns:
                continue
            inode = socket_inode(tgid, fd, self._proc)
            if inode is not None:
                self._by_inode[inode] = backlog
                self._live_at[inode] = now
        self._resolved = resolved

    def backlog_of(self, inodes: frozenset[int]) -> int | None:
        found = [self._by_inode[i] for i in inodes if i in self._by_inode]
        return max(found) if found else None

    def keep_live(self, live_inodes: set[int], now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        for inode in list(self._by_inode):
            if inode in live_inodes:
                self._live_at[inode] = now
            elif now - self._live_at[inode] > BACKLOG_GRACE_S:
                del self._by_inode[inode], self._live_at[inode]


class ListenSource:
    name = "listen"

    def __init__(self, pods: PodDirectory,
                 sample_period_s: float = DEFAULT_SAMPLE_PERIOD_S,
                 idle_sample_period_s: float = DEFAULT_IDLE_SAMPLE_PERIOD_S,
                 backlog_probe: ListenBacklogProbe | None = None,
                 syn_path_probe: ListenSynPathProbe | None = None,
                 open_netns: Callable[[Path], NetnsListeners] = NetnsListeners.open,
                 read_counters: BatchReader[Mapping[str, int]] | None = None,
                 proc: Path = Path("/proc")):
        self.pods = pods
        self.backlog_probe = backlog_probe or ListenBacklogProbe()
        self.syn_path_probe = syn_path_probe or ListenSynPathProbe()
        # (netns, port) → cumulative SYN-path drops by cause at the previous read.
        self._syn_previous: dict[tuple[int, int], dict[str, int]] = {}
        self.sampler = ListenerSampler(sample_period_s, idle_sample_period_s, open_netns)
        self.counters = NetnsCounterDeltas(read_counters=read_counters)
        self.backlogs = RequestedBacklogs(proc)
        self._backlog_attached = False
        # The listeners each pod had when last sampled: an idle pod is sampled once a
        # second, so an interval can end without a sample of a pod whose counters moved.
        self._known: dict[int, NetnsQueues] = {}

    def attach(self, loader: BpfLoader) -> list[ProbeStatus]:
        status = self.backlog_probe.attach(loader)
        self._backlog_attached = status.attached
        paths = self.pods.netns_paths()
        syn_status = self.syn_path_probe.attach(loader)
        if syn_status.attached:
            self._syn_previous = drops_by_listener(self.syn_path_probe.read())
        statuses = [status, syn_status, self._start_sampling(paths)]
        self.counters.update(paths)  # baselines: the first interval reports its own deltas
        statuses.append(ProbeStatus("netns_counters", True, "/proc/net/netstat+snmp in each pod netns"))
        return statuses

    def _start_sampling(self, paths: Mapping[int, Path]) -> ProbeStatus:
        via = (f"netlink inet_diag in each pod netns, every {self.sampler.period_s * 1000:g} ms "
               f"(idle pods every {self.sampler.idle_period_s * 1000:g} ms)")
        try:
            open_diag_socket().close()
        except OSError as exc:
            return ProbeStatus("listen_queues", False, via, f"cannot open a sock_diag netlink socket: {exc}")
        self.sampler.track(paths)
        self.sampler.start()
        return ProbeStatus("listen_queues", True, via)

    def collect(self, frame: SnapshotFrame) -> None:
        paths = self.pods.netns_paths()
        queues = self.sampler.drain()
        self.sampler.track(paths)
        self._known = {netns: known for netns, known in self._known.items() if netns in paths}
        self._known.update(queues)
        netstat = self.counters.update(paths, read_all=frame.final)
        self.sampler.heat(netns for netns, deltas in netstat.items()
                          if any(deltas.get(name) for name in LISTEN_PRESSURE_COUNTERS))
        # A queue seen non-empty means connections are arriving: overflows, if they come,
        # are then counted in the interval they happen, not at the pod's next idle read.
        self.counters.schedule.heat(netns for netns, sampled in queues.items()
                                    if any(row.accept_queue_peak for row in sampled.listeners))
        if self._backlog_attached:
            self.backlogs.update(self.backlog_probe.read())
        self.backlogs.keep_live({i for q in queues.values() for l in q.listeners for i in l.inodes})
        syn_drops = self._syn_drop_deltas()
        # The drops source's per-port overflows are in the frame once every source collected.
        frame.when_collected(lambda: self._write(frame, queues, netstat, syn_drops))

    def _write(self, frame: SnapshotFrame, queues: Mapping[int, NetnsQueues], netstat: Mapping[int, dict[str, int]],
               syn_drops: dict[tuple[int, int], dict[str, int]]) -> None:
        drops: dict[tuple[int, int], int] = dict(frame.listen_overflow_drops)
        for key, by_cause in syn_drops.items():
            # Final-ACK overflows from the kprobe (kernels without TCP_LISTEN_OVERFLOW): the
            # same event the drops source charges to the listener on newer kernels.
            if by_cause.get("final_ack_overflow"):
                drops[key] = drops.get(key, 0) + by_cause["final_ack_overflow"]

        for netns in sorted(set(netstat) | set(queues) | {n for n, _ in drops} | {n for n, _ in syn_drops}):
            sampled = queues.get(netns) or _unsampled(self._known.get(netns))
            listeners = self._listeners(netns, sampled, netstat.get(netns, {}), drops, syn_drops)
            fields: dict = {}
            if netns in netstat:
                fields["netstat"] = MappingProxyType(netstat[netns])
            if listeners:
                fields["listeners"] = listeners
            if fields:
                frame.pod(netns, **fields)

    def _syn_drop_deltas(self) -> dict[tuple[int, int], dict[str, int]]:
        """(netns, port) → {cause: SYN-path drops this interval}, from the kprobe's totals."""
        if not self.syn_path_probe.attached:
            return {}
        current = drops_by_listener(self.syn_path_probe.read())
        deltas = {}
        for key, causes in current.items():
            before = self._syn_previous.get(key, {})
            moved = {cause: n - before.get(cause, 0) for cause, n in causes.items() if n > before.get(cause, 0)}
            if moved:
                deltas[key] = moved
        self._syn_previous = current
        return deltas

    def _listeners(self, netns: int, queues: NetnsQueues | None, netstat: Mapping[str, int],
                   drops: Mapping[tuple[int, int], int],
                   syn_drops: Mapping[tuple[int, int], Mapping[str, int]] = MappingProxyType({}),
                   ) -> tuple[Listener, ...]:
        pressured = any(netstat.get(name, 0) for name in LISTEN_PRESSURE_COUNTERS)
        rows = list(queues.listeners) if queues else []
        drops_by_listener = _assign_drops(rows, {port: n for (ns, port), n in drops.items() if ns == netns})
        syn_by_cause = {cause: _assign_drops(rows, {port: by_cause.get(cause, 0)
                                                    for (ns, port), by_cause in syn_drops.items()
                                                    if ns == netns and by_cause.get(cause)})
                        for cause in ("accept_queue_full", "syn_queue_full")}
        listeners = []
        for index, row in enumerate(rows):
            dropped = drops_by_listener.get(index, 0)
            syn_accept = syn_by_cause["accept_queue_full"].get(index, 0)
            syn_queue = syn_by_cause["syn_queue_full"].get(index, 0)
            if not (pressured or row.accept_queue_peak or row.samples_full or dropped or syn_accept or syn_queue):
                continue
            listeners.append(Listener(
                address=row.address,
                port=row.port,
                accept_queue_peak=row.accept_queue_peak,
                accept_queue_limit=row.accept_queue_limit,
                requested_backlog=self.backlogs.backlog_of(row.inodes),
                somaxconn=queues.somaxconn if queues else None,
                overflow_drops=dropped,
                samples_full=row.samples_full,
                accept_queue_depth_log2=row.depth_log2,
                accept_queue_fill_ratio=row.fill_ratio,
                accept_queue_fill_ratio_sum=row.fill_ratio_sum,
                syn_drops_accept_queue_full=syn_accept,
                syn_drops_syn_queue_full=syn_queue,
            ))
        unseen: dict[int, dict[str, int]] = {}
        for port, dropped in drops_by_listener.get(None, {}).items():
            unseen.setdefault(port, {})["overflow_drops"] = dropped
        for cause, assigned in syn_by_cause.items():
            for port, dropped in assigned.get(None, {}).items():
                unseen.setdefault(port, {})[f"syn_drops_{cause}"] = dropped
        for port, counts in sorted(unseen.items()):
            # Drops charged to a listener the sampler never saw (it closed in between).
            listeners.append(Listener(address=UNKNOWN_LISTENER_ADDRESS, port=port, **counts))
        return tuple(listeners)

    def detach(self) -> None:
        self.sampler.stop()
        self.backlog_probe.detach()
        self.syn_path_probe.detach()
        self._backlog_attached = False


def _unsampled(known: NetnsQueues | None) -> NetnsQueues | None:
    """A pod's last known listeners, with nothing claimed about this interval's queues."""
    if known is None:
        return None
    return NetnsQueues(known.somaxconn, tuple(
        replace(row, accept_queue_peak=0, samples=0, samples_full=0, depth_log2=(), fill_ratio=(),
                fill_ratio_sum=0.0) for row in known.listeners))


def _assign_drops(rows: list[ListenerQueue], drops_by_port: Mapping[int, int]) -> dict:
    """Listener index → its TCP_LISTEN_OVERFLOW drops; None → {port: drops} nobody matched.

    Drops arrive per port; when several listeners share it (0.0.0.0 and ::), they go to the
    one seen full most often, then the one with the deepest queue.
    """
    assigned: dict = {}
    unmatched: dict[int, int] = {}
    for port, dropped in drops_by_port.items():
        candidates = [i for i, row in enumerate(rows) if row.port == port]
        if not candidates:
            unmatched[port] = dropped
            continue
        best = max(candidates, key=lambda i: (rows[i].samples_full, rows[i].accept_queue_peak, -i))
        assigned[best] = dropped
    if unmatched:
        assigned[None] = unmatched
    return assigned
