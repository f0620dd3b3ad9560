"""inet_diag request/response handling and the accept-queue sampler, without a kernel."""
from __future__ import annotations

import errno
import socket
import struct
import time
from pathlib import Path

import pytest

from profiler.system.listeners import (
    NLMSG_DONE, NLMSG_ERROR, SOCK_DIAG_BY_FAMILY, ListenerRow, ListenerSampler,
    build_listener_request, parse_listener_messages, parse_somaxconn,
)


def nlmsg(kind: int, seq: int, body: bytes) -> bytes:
    length = 16 + len(body)
    return struct.pack("=IHHII", length, kind, 2, seq, 0) + body + bytes((-length) % 4)


def diag_msg(family: int, address: str, port: int, rqueue: int, wqueue: int, inode: int) -> bytes:
    """struct inet_diag_msg as linux/inet_diag.h lays it out."""
    raw = socket.inet_pton(family, address).ljust(16, b"\0")
    sockid = struct.pack(">HH", port, 0) + raw + bytes(16) + struct.pack("=III", 0, 1, 0)
    return (struct.pack("=BBBB", family, 10, 0, 0) + sockid
            + struct.pack("=IIIII", 0, rqueue, wqueue, 0, inode))


def test_request_asks_for_tcp_listeners_of_one_family():
    request = build_listener_request(socket.AF_INET6, 7)
    length, kind, flags, seq, _ = struct.unpack_from("=IHHII", request)
    family, protocol, ext, _pad, states = struct.unpack_from("=BBBBI", request, 16)
    assert (length, kind, seq) == (len(request), SOCK_DIAG_BY_FAMILY, 7) and length == 16 + 56
    assert flags & 0x1 and flags & 0x300 == 0x300   # NLM_F_REQUEST | NLM_F_DUMP
    assert (family, protocol, ext, states) == (socket.AF_INET6, socket.IPPROTO_TCP, 0, 1 << 10)


def test_listeners_parsed_until_done():
    data = (nlmsg(SOCK_DIAG_BY_FAMILY, 3, diag_msg(socket.AF_INET, "198.18.0.2", 8080, 5, 4, 777))
            + nlmsg(SOCK_DIAG_BY_FAMILY, 3, diag_msg(socket.AF_INET6, "fd00::1", 443, 0, 4096, 778))
            + nlmsg(NLMSG_DONE, 3, struct.pack("=i", 0)))
    rows, done = parse_listener_messages(data, 3)
    assert done
    assert rows == [ListenerRow(socket.AF_INET, "198.18.0.2", 8080, 5, 4, 777),
                    ListenerRow(socket.AF_INET6, "fd00::1", 443, 0, 4096, 778)]


def test_a_dump_split_over_datagrams_is_not_done_yet():
    rows, done = parse_listener_messages(nlmsg(SOCK_DIAG_BY_FAMILY, 1, diag_msg(2, "0.0.0.0", 80, 0, 128, 1)), 1)
    assert len(rows) == 1 and not done


def test_messages_of_another_request_are_skipped():
    data = (nlmsg(SOCK_DIAG_BY_FAMILY, 1, diag_msg(2, "0.0.0.0", 80, 0, 128, 1))
            + nlmsg(NLMSG_DONE, 1, struct.pack("=i", 0)))
    assert parse_listener_messages(data, 2) == ([], False)


def test_kernel_error_raises_with_its_errno():
    with pytest.raises(OSError) as raised:
        parse_listener_messages(nlmsg(NLMSG_ERROR, 4, struct.pack("=i", -errno.EPERM) + bytes(16)), 4)
    assert raised.value.errno == errno.EPERM


def test_truncated_message_is_an_error_not_garbage():
    data = nlmsg(SOCK_DIAG_BY_FAMILY, 1, diag_msg(2, "0.0.0.0", 80, 0, 128, 1))
    claims_more_than_received = struct.pack("=I", 500) + data[4:]
    with pytest.raises(OSError):
        parse_listener_messages(claims_more_than_received, 1)


@pytest.mark.parametrize("text,value", [(b"4096\n", 4096), ("8", 8), (b"", None), (b"x\n", None)])
def test_somaxconn_parsing(text, value):
    assert parse_somaxconn(text) == value


class FakeNetns:
    """Stands in for NetnsListeners: replays queue depths, one list of rows per sample."""

    def __init__(self, samples: list[list[ListenerRow]], somaxconn: int | None = 4096):
        self.samples = list(samples)
        self._somaxconn = somaxconn
        self.closed = False

    def listeners(self) -> list[ListenerRow]:
        if not self.samples:
            return []
        rows = self.samples.pop(0)
        if isinstance(rows, Exception):
            raise rows
        return rows

    def somaxconn(self) -> int | None:
        return self._somaxconn

    def close(self) -> None:
        self.closed = True


def row(queue: int, limit: int = 4, port: int = 8080, inode: int = 1, address: str = "0.0.0.0") -> ListenerRow:
    return ListenerRow(socket.AF_INET, address, port, queue, limit, inode)


def sampler_with(handles: dict[int, FakeNetns]) -> ListenerSampler:
    sampler = ListenerSampler(0.1, idle_period_s=1.0, open_netns=lambda path: handles[int(path.name)])
    sampler.track({inode: Path(str(inode)) for inode in handles})
    return sampler


def test_peak_and_samples_full_use_the_kernels_test():
    # sk_acceptq_is_full is rqueue > limit: a limit-4 queue holding 4 still takes one more.
    pod = FakeNetns([[row(2)], [row(4)], [row(5)], [row(5)], [row(1)]], somaxconn=128)
    sampler = sampler_with({11: pod})
    for second in range(5):
        sampler.sample_once(now=second)
    (queues,) = sampler.drain().values()
    (listener,) = queues.listeners
    assert (listener.accept_queue_peak, listener.accept_queue_limit) == (5, 4)
    assert (listener.samples, listener.samples_full) == (5, 2)
    assert queues.somaxconn == 128
    assert sampler.drain() == {}, "drain starts a fresh period"


def test_reuseport_sockets_fold_into_one_listener_counted_once_per_sample():
    pod = FakeNetns([[row(5, inode=1), row(5, inode=2)], [row(0, inode=1), row(5, inode=2)],
                     [row(0, inode=1), row(0, inode=2)]])
    sampler = sampler_with({11: pod})
    for second in range(3):
        sampler.sample_once(now=second)
    (listener,) = sampler.drain()[11].listeners
    assert listener.samples == 3 and listener.samples_full == 2
    assert listener.inodes == frozenset({1, 2})


def test_listeners_are_kept_apart_by_pod_address_and_port():
    sampler = sampler_with({
        11: FakeNetns([[row(1, port=80), row(3, port=443), row(2, port=443, address="::")]]),
        12: FakeNetns([[row(0, port=80)]]),
    })
    sampler.sample_once()
    drained = sampler.drain()
    assert [(l.address, l.port, l.accept_queue_peak) for l in drained[11].listeners] == [
        ("0.0.0.0", 80, 1), ("0.0.0.0", 443, 3), ("::", 443, 2)]
    assert [(l.port, l.accept_queue_peak) for l in drained[12].listeners] == [(80, 0)]


def test_a_failing_query_is_skipped_and_counted():
    sampler = sampler_with({11: FakeNetns([OSError(errno.ENOENT, "gone"), [row(3)]])})
    sampler.sample_once(now=0)
    sampler.sample_once(now=1)
    assert sampler.errors == 1
    assert sampler.drain()[11].listeners[0].samples == 1


def test_track_closes_pods_that_went_away_and_skips_ones_that_cannot_be_opened():
    handles = {11: FakeNetns([]), 12: FakeNetns([])}

    def open_netns(path: Path) -> FakeNetns:
        if path.name == "13":
            raise FileNotFoundError(path)
        return handles[int(path.name)]

    sampler = ListenerSampler(0.1, open_netns=open_netns)
    sampler.track({11: Path("11"), 12: Path("12"), 13: Path("13")})
    sampler.track({12: Path("12")})
    assert handles[11].closed and not handles[12].closed
    sampler.stop()
    assert handles[12].closed


def test_background_thread_samples_at_its_period():
    pod = FakeNetns([[row(5)]] * 1000)
    sampler = sampler_with({11: pod})
    sampler.start()
    try:
        import time
        deadline = time.monotonic() + 2
        while sampler.passes < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        sampler.stop()
    assert sampler.passes >= 3
    assert sampler.drain()[11].listeners[0].samples_full == sampler.passes


def test_idle_pods_are_sampled_slowly_and_busy_or_heated_ones_fast():
    idle = FakeNetns([[row(0, inode=1)]] * 100)
    busy = FakeNetns([[row(2, inode=2)]] + [[row(0, inode=2)]] * 100)
    heated = FakeNetns([[row(0, inode=3)]] * 100)
    sampler = ListenerSampler(0.1, idle_period_s=1.0, open_netns=lambda path: {11: idle, 12: busy, 13: heated}[int(path.name)])
    sampler.track({11: Path("11"), 12: Path("12"), 13: Path("13")})
    sampler.sample_once(now=0.0)
    sampler.heat([13], now=0.05)
    for step in range(1, 20):                  # 1.9 s at the 100 ms period
        sampler.sample_once(now=step * 0.1)
    samples = {inode: q.listeners[0].samples for inode, q in sampler.drain().items()}
    assert samples == {11: 2, 12: 20, 13: 20}  # idle: at 0 s and 1 s; the others every pass


def test_sampling_periods_must_make_sense():
    for fast, idle in ((0, 1.0), (0.5, 0.1)):
        with pytest.raises(ValueError):
            ListenerSampler(fast, idle_period_s=idle)


def test_the_thread_sleeps_until_a_pod_is_due_and_wakes_when_one_heats():
    # It woke every period (10 times a second) to find every idle pod not due yet.
    idle = FakeNetns([[row(0, inode=1)]] * 1000)
    sampler = ListenerSampler(0.05, idle_period_s=30.0, open_netns=lambda path: idle)
    sampler.track({11: Path("11")})
    assert sampler.next_due(now=5.0) == 5.0          # never sampled: due now
    sampler.start()
    try:
        deadline = time.monotonic() + 10
        while sampler.passes < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.5)                              # ten periods
        assert sampler.passes == 1
        assert sampler.next_due() > time.monotonic() + 20
        sampler.heat([11])
        while sampler.passes < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert sampler.passes >= 2, "heat() did not wake the thread"
    finally:
        started = time.monotonic()
        sampler.stop()
    assert time.monotonic() - started < 5             # stop() wakes it too, 30 s before its pod is due
