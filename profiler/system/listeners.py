"""Every TCP listener's accept queue, per pod, sampled fast enough to catch it full.

inet_diag (netlink NETLINK_SOCK_DIAG) answers for the network namespace the netlink socket
was *created* in, and a socket keeps that namespace for life. So each pod's socket is
created once inside the pod's netns (a short setns thread, `run_in_netns`), and one
sampler thread then queries every pod's socket from netprof's own namespace: no thread
and no setns per sample. For each listener the kernel reports

    idiag_rqueue  sk_ack_backlog: connections completed and waiting for accept()
    idiag_wqueue  sk_max_ack_backlog: the limit, min(listen() backlog, net.core.somaxconn)
    idiag_inode   the socket's inode, which `readlink /proc/<pid>/fd/<fd>` also names

The kernel's test for a full queue is `sk_ack_backlog > sk_max_ack_backlog`
(sk_acceptq_is_full), so a listener with limit N holds N + 1 connections when full;
measured on 6.18: listen(3) under a flood peaked at rqueue 4.

Why a hand-written request and parser instead of pyroute2's DiagSocket: pyroute2 0.9
binds its socket to the thread that first uses it (a DiagSocket made inside the pod's netns
thread and queried from another thread silently answered for netprof's own netns), and one
IPv4+IPv6 query cost 0.59 ms of CPU against 0.026 ms here — at 10 samples/s in 100 pods,
59% of a core against 2.6%. The message layout is fixed uapi (linux/inet_diag.h).

The per-pod socket holds a reference on the pod's netns; `ListenerSampler.track()` closes
it as soon as the netns is no longer listed, so a deleted pod's namespace is freed within
one interval.
"""
from __future__ import annotations

import os
import socket
import struct
import stat
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import NetprofError
from ..kernel.addresses import format_address
from .netns import run_in_netns

NETLINK_SOCK_DIAG = 4
SOCK_DIAG_BY_FAMILY = 20
NLMSG_ERROR = 2
NLMSG_DONE = 3
NLM_F_REQUEST = 0x1
NLM_F_DUMP = 0x300          # NLM_F_ROOT | NLM_F_MATCH
TCP_LISTEN = 10             # enum tcp_state; inet_diag filters by 1 << state

_NLMSG_HEADER = struct.Struct("=IHHII")          # len, type, flags, seq, pid
# struct inet_diag_req_v2: family, protocol, ext, pad, states, then a 48-byte sockid filter
# left zero (no filter).
_DIAG_REQUEST = struct.Struct("=BBBBI48x")
# struct inet_diag_msg: family, state, timer, retrans, sockid{sport be16, dport be16,
# src[16], dst[16], if, cookie[2]}, expires, rqueue, wqueue, uid, inode.
_DIAG_MESSAGE_HEAD = struct.Struct("=BBBB")
_DIAG_PORTS = struct.Struct(">HH")
_DIAG_SRC_OFFSET = 8
_DIAG_QUEUES = struct.Struct("=IIII")            # rqueue, wqueue, uid, inode
_DIAG_QUEUES_OFFSET = 56
DIAG_MESSAGE_SIZE = 72

SOMAXCONN_PATH = "/proc/sys/net/core/somaxconn"
RECV_BUFFER = 1 << 16
# A pod whose accept queue was seen non-empty keeps the fast sampling period this long.
HOT_HOLD_S = 5.0
QUERY_TIMEOUT_S = 1.0


@dataclass(frozen=True)
class ListenerRow:
    """One listening socket as inet_diag reports it at one instant."""

    family: int               # socket.AF_INET or AF_INET6
    address: str
    port: int
    accept_queue: int         # idiag_rqueue
    accept_queue_limit: int   # idiag_wqueue
    inode: int                # idiag_inode: joins with /proc/<pid>/fd/<fd> → socket:[inode]


def build_listener_request(family: int, sequence: int) -> bytes:
    """An inet_diag dump request for the TCP listeners of one address family."""
    body = _DIAG_REQUEST.pack(family, socket.IPPROTO_TCP, 0, 0, 1 << TCP_LISTEN)
    header = _NLMSG_HEADER.pack(_NLMSG_HEADER.size + len(body), SOCK_DIAG_BY_FAMILY,
                                NLM_F_REQUEST | NLM_F_DUMP, sequence, 0)
    return header + body


def parse_listener_messages(data: bytes, sequence: int) -> tuple[list[ListenerRow], bool]:
    """Listeners in one netlink datagram, and whether the dump is complete (NLMSG_DONE).

    Messages answering another request (another sequence number) are skipped; an
    NLMSG_ERROR raises OSError with the kernel's errno.
    """
    rows: list[ListenerRow] = []
    offset = 0
    while offset + _NLMSG_HEADER.size <= len(data):
        length, kind, _flags, seq, _pid = _NLMSG_HEADER.unpack_from(data, offset)
        if length < _NLMSG_HEADER.size or offset + length > len(data):
            raise OSError(f"truncated netlink message ({length} bytes at {offset} of {len(data)})")
        body = offset + _NLMSG_HEADER.size
        if seq == sequence:
            if kind == NLMSG_DONE:
                return rows, True
            if kind == NLMSG_ERROR:
                (error,) = struct.unpack_from("=i", data, body)
                if error:
                    raise OSError(-error, f"inet_diag: {os.strerror(-error)}")
                return rows, True
            if kind == SOCK_DIAG_BY_FAMILY and length - _NLMSG_HEADER.size >= DIAG_MESSAGE_SIZE:
                family, _state, _timer, _retrans = _DIAG_MESSAGE_HEAD.unpack_from(data, body)
                sport, _dport = _DIAG_PORTS.unpack_from(data, body + 4)
                src = data[body + _DIAG_SRC_OFFSET: body + _DIAG_SRC_OFFSET + 16]
                rqueue, wqueue, _uid, inode = _DIAG_QUEUES.unpack_from(data, body + _DIAG_QUEUES_OFFSET)
                rows.append(ListenerRow(family, format_address(family, src), sport, rqueue, wqueue, inode))
        offset += (length + 3) & ~3  # NLMSG_ALIGN
    return rows, False


def open_diag_socket() -> socket.socket:
    """A sock_diag netlink socket in the calling thread's network namespace."""
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)
    try:
        sock.bind((0, 0))
        sock.settimeout(QUERY_TIMEOUT_S)
    except BaseException:
        sock.close()
        raise
    return sock


class DiagQuery:
    """Queries one sock_diag socket; only ever used from one thread at a time."""

    def __init__(self, sock: socket.socket):
        self._sock = sock
        self._sequence = 0
        self._buffer = bytearray(RECV_BUFFER)

    def listeners(self, families: tuple[int, ...] = (socket.AF_INET, socket.AF_INET6)) -> list[ListenerRow]:
        rows: list[ListenerRow] = []
        for family in families:
            self._sequence = (self._sequence + 1) & 0xFFFFFFFF
            self._sock.send(build_listener_request(family, self._sequence))
            while True:
                size = self._sock.recv_into(self._buffer)
                found, done = parse_listener_messages(bytes(self._buffer[:size]), self._sequence)
                rows.extend(found)
                if done:
                    break
        return rows

    def close(self) -> None:
        self._sock.close()


def parse_somaxconn(text: bytes | str) -> int | None:
    try:
        return int(text.strip())
    except ValueError:
        return None


class NetnsListeners:
    """What the sampler holds for one pod: its sock_diag socket and its somaxconn file.

    Both are opened inside the pod's netns and then used from any thread: the socket keeps
    its netns, and a /proc/sys/net file opened there keeps reading that netns' value
    (verified: a value changed with `ip netns exec … sysctl -w` shows on the next pread).
    """

    def __init__(self, query: DiagQuery, somaxconn_fd: int | None):
        self._query = query
        self._somaxconn_fd = somaxconn_fd

    @classmethod
    def open(cls, netns: Path | str) -> "NetnsListeners":
        def open_here() -> NetnsListeners:
            sock = open_diag_socket()
            try:
                # O_NONBLOCK and the fstat: never wait on, or keep, anything but a regular file.
                fd: int | None = os.open(SOMAXCONN_PATH, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
            except OSError:
                fd = None  # /proc/sys read-only or hidden: the limit still shows as wqueue
            if fd is not None and not stat.S_ISREG(os.fstat(fd).st_mode):
                os.close(fd)
                fd = None
            return cls(DiagQuery(sock), fd)

        return run_in_netns(netns, open_here)

    def listeners(self) -> list[ListenerRow]:
        return self._query.listeners()

    def somaxconn(self) -> int | None:
        if self._somaxconn_fd is None:
            return None
        try:
            return parse_somaxconn(os.pread(self._somaxconn_fd, 32, 0))
        except OSError:
            return None

    def close(self) -> None:
        self._query.close()
        if self._somaxconn_fd is not None:
            os.close(self._somaxconn_fd)
            self._somaxconn_fd = None


@dataclass(frozen=True)
class ListenerQueue:
    """One listening address of one pod over a drain period. Sockets sharing an address and
    port (SO_REUSEPORT groups) are folded together: peak and limit are the largest single
    queue's, a sample is full when any of them was."""

    family: int
    address: str
    port: int
    accept_queue_peak: int
    accept_queue_limit: int
    samples: int              # samples that saw this listener
    samples_full: int         # samples where a queue was full: rqueue > wqueue, the kernel's test
    inodes: frozenset[int]
    # Samples by queue depth (the deepest socket's): bucket 0 holds empty queues, bucket
    # i >= 1 depths in [2^(i-1), 2^i) — see depth_bucket().
    depth_log2: tuple[int, ...] = ()
    # The same samples by fill ratio, depth / limit: count i is ratios in
    # (FILL_RATIO_BOUNDS[i-1], FILL_RATIO_BOUNDS[i]], the last one above every bound.
    fill_ratio: tuple[int, ...] = ()
    fill_ratio_sum: float = 0.0


# Upper bounds (Prometheus `le`) of the fill-ratio histogram: one fixed set whatever the
# limit, so listeners with limits 4 and 4096 aggregate. The kernel drops at depth > limit,
# so 1 is "at the limit" and anything above it a full queue.
FILL_RATIO_BOUNDS = (0.0, 0.25, 0.5, 0.75, 0.9, 1.0, 1.25, 1.5, 2.0)


def depth_bucket(depth: int) -> int:
    """The depth histogram's bucket of one sampled accept-queue depth."""
    return depth.bit_length()


def fill_ratio(depth: int, limit: int) -> float:
    """How full a queue of `limit` is at `depth` (a limit of 0 — listen(fd, 0) — counts as 1:
    one waiting connection already overflows it)."""
    return depth / max(limit, 1)


def fill_ratio_bucket(ratio: float) -> int:
    """The fill-ratio histogram's count a ratio goes into (le semantics: ratio <= bound)."""
    return next((i for i, bound in enumerate(FILL_RATIO_BOUNDS) if ratio <= bound), len(FILL_RATIO_BOUNDS))


@dataclass(frozen=True)
class NetnsQueues:
    somaxconn: int | None
    listeners: tuple[ListenerQueue, ...]


class _Accumulator:
    __slots__ = ("family", "peak", "limit", "samples", "samples_full", "inodes", "seen_pass", "full_pass",
                 "depth_log2", "fill_ratio", "fill_ratio_sum")

    def __init__(self, family: int):
        self.family = family
        self.peak = 0
        self.limit = 0
        self.samples = 0
        self.samples_full = 0
        self.inodes: set[int] = set()
        self.seen_pass = -1
        self.full_pass = -1
        self.depth_log2: list[int] = []
        self.fill_ratio = [0] * (len(FILL_RATIO_BOUNDS) + 1)
        self.fill_ratio_sum = 0.0


class ListenerSampler:
    """Polls the tracked pods' listeners from one background thread and keeps, per
    listener, the peak accept-queue depth and the samples at the limit until `drain()`.

    Busy pods are polled every `period_s`, idle ones every `idle_period_s` (see
    `sample_once`). A queue that fills and empties between two samples is missed; the
    pod's own ListenOverflows counter is exact and sits beside this in the snapshot.
    """

    def __init__(self, period_s: float = 0.1, idle_period_s: float = 1.0,
                 open_netns: Callable[[Path], NetnsListeners] = NetnsListeners.open):
        if not 0 < period_s <= idle_period_s:
            raise ValueError(f"need 0 < period_s <= idle_period_s, got {period_s}, {idle_period_s}")
        self.period_s = period_s
        self.idle_period_s = idle_period_s
        self._open_netns = open_netns
        self._lock = threading.Lock()
        self._handles: dict[int, NetnsListeners] = {}
        self._paths: dict[int, Path] = {}
        self._stats: dict[int, dict[tuple[str, int], _Accumulator]] = {}
        self._due: dict[int, float] = {}        # netns → monotonic time of its next sample
        self._hot_until: dict[int, float] = {}  # netns → sampled every period_s until then
        self._pass = 0
        self._stop = threading.Event()
        # Set by heat(), track() and stop(): the thread sleeps until the next pod is due, which
        # for idle pods is idle_period_s away, and these must not wait that long.
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.cpu_s = 0.0        # CPU time the sampling passes took (thread time)
        self.passes = 0
        self.queries = 0        # pods sampled, over all passes
        self.errors = 0         # failed queries (a netns torn down mid-query); skipped

    def track(self, paths: Mapping[int, Path]) -> None:
        """Sample exactly these pods from now on: open the new ones, close the gone ones."""
        new = {inode: path for inode, path in paths.items()
               if inode not in self._handles or self._paths.get(inode) != path}
        opened: dict[int, NetnsListeners] = {}
        for inode, path in new.items():
            try:
                opened[inode] = self._open_netns(path)
            except (OSError, NetprofError):
                continue  # the pod went away between listing and opening (normal), or hung
        with self._lock:
            stale = [i for i in self._handles if i not in paths or i in opened]
            closing = [self._handles.pop(i) for i in stale]
            for inode in stale:
                self._paths.pop(inode, None)
                self._due.pop(inode, None)
                self._hot_until.pop(inode, None)
            self._handles.update(opened)
            self._paths.update({i: new[i] for i in opened})
        for handle in closing:
            handle.close()
        if opened:
            self._wake.set()  # a new pod is due now

    def next_due(self, now: float | None = None) -> float:
        """When the next pod is due (a pod never sampled is due now); idle_period_s from now
        when no pod is tracked."""
        now = time.monotonic() if now is None else now
        with self._lock:
            if not self._handles:
                return now + self.idle_period_s
            return min(self._due.get(inode, now) for inode in self._handles)

    def heat(self, inodes: Iterable[int], now: float | None = None) -> None:
        """Sample these pods every period_s from now on, for HOT_HOLD_S (their overflow
        counters moved: the queue is worth watching closely)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            for inode in inodes:
                if inode in self._handles:
                    self._hot_until[inode] = now + HOT_HOLD_S
                    self._due[inode] = min(self._due.get(inode, now), now)
        self._wake.set()

    def sample_once(self, now: float | None = None) -> None:
        """Query every pod that is due. A pod is sampled every period_s while hot (a queue
        was non-empty in the last HOT_HOLD_S, or `heat()`), else every idle_period_s: an
        inet_diag dump walks the node-wide listening hash, ~30 µs per query here, so
        polling a hundred idle pods ten times a second would cost for nothing."""
        started = time.thread_time()
        now = time.monotonic() if now is None else now
        with self._lock:
            self._pass += 1
            for inode, handle in self._handles.items():
                # Half a period of slack: a wake-up a hair early must not skip a whole period.
                if now < self._due.get(inode, now) - self.period_s / 2:
                    continue
                self.queries += 1
                try:
                    rows = handle.listeners()
                except OSError:
                    self.errors += 1
                    continue
                if any(row.accept_queue for row in rows):
                    self._hot_until[inode] = now + HOT_HOLD_S
                hot = now < self._hot_until.get(inode, float("-inf"))
                self._due[inode] = now + (self.period_s if hot else self.idle_period_s)
                self._accumulate(inode, rows)
            self.passes += 1
        self.cpu_s += time.thread_time() - started

    def _accumulate(self, inode: int, rows: list[ListenerRow]) -> None:
        stats = self._stats.setdefault(inode, {})
        deepest: dict[tuple[str, int], tuple[int, int]] = {}   # (depth, that socket's limit)
        for row in rows:
            key = (row.address, row.port)
            deepest[key] = max(deepest.get(key, (0, 0)), (row.accept_queue, row.accept_queue_limit))
            acc = stats.get((row.address, row.port))
            if acc is None:
                acc = stats[(row.address, row.port)] = _Accumulator(row.family)
            acc.peak = max(acc.peak, row.accept_queue)
            acc.limit = max(acc.limit, row.accept_queue_limit)
            acc.inodes.add(row.inode)
            # Counted once per pass, however many sockets share the address.
            if acc.seen_pass != self._pass:
                acc.seen_pass = self._pass
                acc.samples += 1
            if row.accept_queue > row.accept_queue_limit and acc.full_pass != self._pass:
                acc.full_pass = self._pass
                acc.samples_full += 1
        # One depth per address per pass, like `samples`: the deepest of the sockets sharing it.
        for key, (depth, limit) in deepest.items():
            acc = stats[key]
            histogram = acc.depth_log2
            bucket = depth_bucket(depth)
            if bucket >= len(histogram):
                histogram.extend([0] * (bucket + 1 - len(histogram)))
            histogram[bucket] += 1
            ratio = fill_ratio(depth, limit)
            acc.fill_ratio[fill_ratio_bucket(ratio)] += 1
            acc.fill_ratio_sum += ratio

    def drain(self) -> dict[int, NetnsQueues]:
        """Everything sampled since the previous drain, by netns inode; starts afresh."""
        with self._lock:
            stats, self._stats = self._stats, {}
            # Read once per drain, not per sample: it changes only when someone sets it.
            somaxconn = {inode: self._handles[inode].somaxconn() for inode in stats if inode in self._handles}
        return {
            inode: NetnsQueues(
                somaxconn=somaxconn.get(inode),
                listeners=tuple(
                    ListenerQueue(acc.family, address, port, acc.peak, acc.limit, acc.samples,
                                  acc.samples_full, frozenset(acc.inodes), tuple(acc.depth_log2),
                                  tuple(acc.fill_ratio) if acc.samples else (), acc.fill_ratio_sum)
                    for (address, port), acc in sorted(per_netns.items())
                ),
            )
            for inode, per_netns in stats.items()
        }

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="netprof-listeners", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # before the pass: a heat() during it wakes the next wait
            self.sample_once()
            # Asleep until the next pod is due: with every pod idle that is once per
            # idle_period_s, not ten wake-ups a second that find nothing to do. Never sooner
            # than half a period (sample_once's slack), so a pod behind its time (many pods,
            # a busy CPU) is caught up at the next pass, not in a burst.
            now = time.monotonic()
            delay = min(max(self.next_due(now) - now, self.period_s / 2), self.idle_period_s)
            self._wake.wait(delay)

    def stop(self) -> None:
        """Stop the thread and close every pod's socket (releasing its netns)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with self._lock:
            handles = list(self._handles.values())
            self._handles.clear()
            self._paths.clear()
        for handle in handles:
            handle.close()
