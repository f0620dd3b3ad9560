"""The listen source's joins and deltas, with the kernel replaced by recorded values."""
from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from types import MappingProxyType, SimpleNamespace

import numpy as np
import pytest

from profiler.probes.base import ProbeStatus
from profiler.probes.listen import (
    LISTEN_CALL, LISTEN_CALL_KEY, ListenCalls, listen_via, parse_socket_link, socket_inode,
)
from profiler.snapshot import Listener, SnapshotFrame
from profiler.sources.listen import BACKLOG_GRACE_S, NetnsCounterDeltas, ListenSource, RequestedBacklogs
from profiler.system.listeners import ListenerRow
from tests.unit.test_listen_diag import FakeNetns
from tests.unit.test_netns_schedule import batch_of


def fake_proc(tmp_path: Path, links: dict[tuple[int, int], str]) -> Path:
    for (pid, fd), target in links.items():
        fd_dir = tmp_path / str(pid) / "fd"
        fd_dir.mkdir(parents=True, exist_ok=True)
        os.symlink(target, fd_dir / str(fd))
    return tmp_path


def calls(*rows: tuple[int, int, int, int]) -> ListenCalls:
    """(tgid, fd, backlog, called_ns) rows, as the probe reads them from its map."""
    keys = np.array([(tgid, fd) for tgid, fd, _, _ in rows], LISTEN_CALL_KEY)
    values = np.array([(backlog, 1, ns) for _, _, backlog, ns in rows], LISTEN_CALL)
    return ListenCalls(keys, values)


def test_the_listen_probes_method_says_which_hook_and_why_not_fentry():
    assert listen_via(None) == "fentry:__sys_listen"
    assert listen_via("the kernel refused fentry:__sys_listen (EPERM)") == (
        "tracepoint:syscalls:sys_enter_listen (the kernel refused fentry:__sys_listen (EPERM))")


def test_socket_link_parsing():
    assert parse_socket_link("socket:[4026]") == 4026
    for other in ("pipe:[12]", "/etc/passwd", "socket:[]", "socket:[12x]", "anon_inode:[eventpoll]"):
        assert parse_socket_link(other) is None


def test_socket_inode_reads_the_link_without_following_it(tmp_path):
    proc = fake_proc(tmp_path, {(10, 3): "socket:[555]", (10, 4): "/nonexistent/file"})
    assert socket_inode(10, 3, proc) == 555
    assert socket_inode(10, 4, proc) is None      # not a socket
    assert socket_inode(10, 9, proc) is None      # fd closed
    assert socket_inode(99, 3, proc) is None      # process gone


def test_counter_deltas_start_from_the_first_sight_of_each_netns():
    values = {1: {"TcpExt.ListenOverflows": 10, "Tcp.RetransSegs": 5, "Ip.InReceives": 1}}
    deltas = NetnsCounterDeltas(read_counters=batch_of(lambda path: values[int(path.name)]))
    assert deltas.update({1: Path("1")}) == {}
    values[1] = {"TcpExt.ListenOverflows": 25, "Tcp.RetransSegs": 5, "Ip.InReceives": 9}
    values[2] = {"TcpExt.ListenOverflows": 3}
    assert deltas.update({1: Path("1"), 2: Path("2")}) == {1: {"TcpExt.ListenOverflows": 15}}
    assert deltas.update({1: Path("1"), 2: Path("2")}) == {}, "unchanged pods are not reported"


def test_counter_that_went_down_is_a_new_netns_with_a_reused_inode():
    values = {"TcpExt.ListenDrops": 100}
    deltas = NetnsCounterDeltas(read_counters=batch_of(lambda path: values))
    deltas.update({1: Path("1")})
    values = {"TcpExt.ListenDrops": 4}
    assert deltas.update({1: Path("1")}) == {1: {"TcpExt.ListenDrops": 4}}


def test_a_netns_that_vanished_is_skipped():
    def read(path: Path):
        raise FileNotFoundError(path)

    assert NetnsCounterDeltas(read_counters=batch_of(read)).update({1: Path("1")}) == {}


def test_requested_backlog_joins_by_socket_inode(tmp_path):
    proc = fake_proc(tmp_path, {(10, 3): "socket:[555]", (11, 3): "socket:[556]"})
    backlogs = RequestedBacklogs(proc)
    backlogs.update(calls((10, 3, 64, 100), (11, 3, 511, 101), (12, 5, 9, 102)))
    assert backlogs.backlog_of(frozenset({555})) == 64
    assert backlogs.backlog_of(frozenset({555, 556})) == 511   # SO_REUSEPORT group: the largest
    assert backlogs.backlog_of(frozenset({999})) is None       # listen() before netprof started


def test_a_relisten_on_the_same_fd_is_picked_up_and_an_unchanged_call_not_reread(tmp_path):
    proc = fake_proc(tmp_path, {(10, 3): "socket:[555]"})
    backlogs = RequestedBacklogs(proc)
    backlogs.update(calls((10, 3, 64, 100)))
    (proc / "10" / "fd" / "3").unlink()      # a second read of the same call would miss now
    backlogs.update(calls((10, 3, 64, 100)))
    assert backlogs.backlog_of(frozenset({555})) == 64
    os.symlink("socket:[555]", proc / "10" / "fd" / "3")
    backlogs.update(calls((10, 3, 1024, 200)))
    assert backlogs.backlog_of(frozenset({555})) == 1024


def test_backlogs_of_closed_listeners_are_forgotten_after_a_grace(tmp_path):
    backlogs = RequestedBacklogs(fake_proc(tmp_path, {(10, 3): "socket:[555]"}))
    backlogs.update(calls((10, 3, 64, 100)), now=0.0)
    backlogs.keep_live({555}, now=10.0)
    backlogs.keep_live(set(), now=10.0 + BACKLOG_GRACE_S)
    assert backlogs.backlog_of(frozenset({555})) == 64
    backlogs.keep_live(set(), now=10.1 + BACKLOG_GRACE_S)
    assert backlogs.backlog_of(frozenset({555})) is None


class FakeBacklogProbe:
    name = "listen_backlog"

    def __init__(self, listen_calls: ListenCalls):
        self.listen_calls = listen_calls

    def attach(self, loader) -> ProbeStatus:
        return ProbeStatus(self.name, True, "tracepoint:syscalls:sys_enter_listen")

    def read(self) -> ListenCalls:
        return self.listen_calls

    def detach(self) -> None:
        pass


class FakePods:
    def __init__(self, paths: dict[int, Path]):
        self.paths = paths

    def netns_paths(self) -> dict[int, Path]:
        return dict(self.paths)

    def label(self, inode: int) -> str:
        return f"pod{inode}"


def listener_row(queue: int, port: int, inode: int, limit: int = 4) -> ListenerRow:
    return ListenerRow(socket.AF_INET, "0.0.0.0", port, queue, limit, inode)


def run_one_interval(tmp_path, counters_after: dict[int, dict[str, int]], rows: dict[int, list[ListenerRow]],
                     drops: dict[tuple[int, int], int] | None = None) -> dict[int, object]:
    """`drops`: the interval's TCP_LISTEN_OVERFLOW drops by (netns, port), as the drops source
    writes them into the frame."""
    counters = {inode: {"TcpExt.ListenOverflows": 0, "TcpExt.ListenDrops": 0} for inode in rows}
    proc = fake_proc(tmp_path, {(10, 3): "socket:[555]"})
    source = ListenSource(
        FakePods({inode: Path(str(inode)) for inode in rows}),
        sample_period_s=3600, idle_sample_period_s=3600,  # one pass at start; then by hand
        backlog_probe=FakeBacklogProbe(calls((10, 3, 64, 100))),
        open_netns=lambda path: FakeNetns([rows[int(path.name)]] * 10, somaxconn=128),
        read_counters=batch_of(lambda path: counters[int(path.name)]),
        proc=proc,
    )
    statuses = source.attach(SimpleNamespace(info=SimpleNamespace(kprobes=False)))
    try:
        assert [s.name for s in statuses] == ["listen_backlog", "listen_syn_path", "listen_queues", "netns_counters"]
        assert not statuses[1].attached and "CONFIG_KPROBES" in statuses[1].error
        source.sampler.sample_once(now=time.monotonic() + 7200)  # due whatever the thread did
        counters.update(counters_after)
        frame = SnapshotFrame(0.0, lambda inode: f"pod{inode}")
        source.collect(frame)
        frame.listen_overflow_drops.update(drops or {})     # a source collecting after this one
    finally:
        source.detach()
    return {pod.netns: pod for pod in frame.freeze(1.0).pods}


def test_an_overflowing_pod_reports_its_counters_and_full_listener(tmp_path):
    pods = run_one_interval(
        tmp_path,
        counters_after={1: {"TcpExt.ListenOverflows": 40, "TcpExt.ListenDrops": 40}},
        rows={1: [listener_row(5, 8080, 555), listener_row(0, 22, 556)], 2: [listener_row(0, 8081, 557)]},
    )
    assert set(pods) == {1}, "the quiet pod with an idle listener is not reported"
    assert dict(pods[1].netstat) == {"TcpExt.ListenOverflows": 40, "TcpExt.ListenDrops": 40}
    by_port = {l.port: l for l in pods[1].listeners}
    assert by_port[8080] == Listener("0.0.0.0", 8080, accept_queue_peak=5, accept_queue_limit=4,
                                     requested_backlog=64, somaxconn=128, overflow_drops=0,
                                     samples_full=by_port[8080].samples_full,
                                     accept_queue_depth_log2=by_port[8080].accept_queue_depth_log2,
                                     accept_queue_fill_ratio=by_port[8080].accept_queue_fill_ratio,
                                     accept_queue_fill_ratio_sum=by_port[8080].accept_queue_fill_ratio_sum)
    # Every sample was 5 of a limit of 4: fill ratio 1.25, in the bucket le=1.25 (index 6).
    samples = sum(by_port[8080].accept_queue_depth_log2)
    assert samples >= 1
    assert by_port[8080].accept_queue_fill_ratio == (0,) * 6 + (samples,) + (0,) * 3
    assert by_port[8080].accept_queue_fill_ratio_sum == 1.25 * samples
    assert by_port[8080].samples_full >= 1
    # Every sample saw depth 5: bucket 3 holds depths [4, 8).
    depths = by_port[8080].accept_queue_depth_log2
    assert len(depths) == 4 and depths[3] == sum(depths) >= 1
    # The pod overflowed, so its idle listener is listed too: it is a candidate.
    assert by_port[22].accept_queue_peak == 0 and by_port[22].requested_backlog is None


def test_listen_overflow_drops_from_the_drops_source_land_on_their_listener(tmp_path):
    drops = {(1, 8080): 7, (1, 9999): 2, (2, 8080): 1}
    pods = run_one_interval(tmp_path, counters_after={},
                            rows={1: [listener_row(3, 8080, 555)], 2: [listener_row(0, 8080, 557)]},
                            drops=drops)
    by_port = {l.port: l for l in pods[1].listeners}
    assert by_port[8080].overflow_drops == 7
    assert by_port[9999] == Listener("*", 9999, overflow_drops=2), "a listener already closed"
    assert [(l.port, l.overflow_drops) for l in pods[2].listeners] == [(8080, 1)]


def test_drops_for_a_port_shared_by_two_listeners_go_to_the_one_seen_full():
    from profiler.sources.listen import _assign_drops
    from profiler.system.listeners import ListenerQueue

    v4 = ListenerQueue(socket.AF_INET, "0.0.0.0", 80, 3, 4, 10, 0, frozenset({1}))
    v6 = ListenerQueue(socket.AF_INET6, "::", 80, 5, 4, 10, 6, frozenset({2}))
    assert _assign_drops([v4, v6], {80: 9}) == {1: 9}


def test_a_pod_not_sampled_this_interval_still_names_its_listeners(tmp_path):
    """An idle pod is sampled once a second; when its counters move in an interval without
    a sample, its last known listeners are listed, with no claim about their queues."""
    counters = {1: {"TcpExt.ListenOverflows": 0}}
    handle = FakeNetns([[listener_row(0, 8080, 555)]] * 10, somaxconn=128)
    source = ListenSource(FakePods({1: Path("1")}), sample_period_s=3600, idle_sample_period_s=3600,
                          backlog_probe=FakeBacklogProbe(calls((10, 3, 64, 100))),
                          open_netns=lambda path: handle, read_counters=batch_of(lambda path: counters[1]),
                          proc=fake_proc(tmp_path, {(10, 3): "socket:[555]"}))
    source.attach(SimpleNamespace(info=SimpleNamespace(kprobes=False)))
    try:
        source.sampler.sample_once(now=time.monotonic() + 7200)
        source.collect(SnapshotFrame(0.0, str))              # sampled: learns the listener
        counters[1] = {"TcpExt.ListenOverflows": 9}
        frame = SnapshotFrame(1.0, str)
        source.collect(frame)                                # not sampled in this interval
    finally:
        source.detach()
    (pod,) = frame.freeze(2.0).pods
    assert dict(pod.netstat) == {"TcpExt.ListenOverflows": 9}
    assert pod.listeners == (Listener("0.0.0.0", 8080, accept_queue_peak=0, accept_queue_limit=4,
                                      requested_backlog=64, somaxconn=128),)


@pytest.mark.parametrize("listen_first", [True, False], ids=["listen-then-drops", "drops-then-listen"])
def test_the_listen_source_gets_the_drops_whatever_the_order_of_the_sources(tmp_path, listen_first):
    """Sources exchange only what is in the frame: the drops source's per-port overflows
    reach the listen source's listeners in either order (the sampler fixes none)."""
    from profiler.sampler import Sampler
    from profiler.sources.drops import DropSource
    from tests.unit.test_drops_source import KALLSYMS, REASONS, FakeProbe, counts

    pods = FakePods({1: Path("1")})
    listen = ListenSource(pods, sample_period_s=3600, idle_sample_period_s=3600,
                          backlog_probe=FakeBacklogProbe(calls()),
                          open_netns=lambda path: FakeNetns([[listener_row(3, 8080, 555)]] * 10, somaxconn=128),
                          read_counters=batch_of(lambda path: {"TcpExt.ListenOverflows": 0}),
                          proc=fake_proc(tmp_path, {}))
    # The first read is the one that opens the window at attach (nothing counted yet).
    drops = DropSource(FakeProbe([counts(), counts(listeners=[(1, 8080, 7), (1, 9999, 2)])]), kallsyms=KALLSYMS)
    sampler = Sampler(pods, [listen, drops] if listen_first else [drops, listen])
    sampler.attach(SimpleNamespace(layout=SimpleNamespace(drop_reasons=REASONS),
                                   info=SimpleNamespace(kprobes=False)))
    try:
        listen.sampler.sample_once(now=time.monotonic() + 7200)  # due whatever the thread did
        snapshot = sampler.sample()
    finally:
        sampler.detach()
    (pod,) = snapshot.pods
    assert [(l.address, l.port, l.overflow_drops) for l in pod.listeners] == [("0.0.0.0", 8080, 7), ("*", 9999, 2)]
