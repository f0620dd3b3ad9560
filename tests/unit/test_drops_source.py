"""DropSource turns cumulative map contents into per-interval frame fields (no kernel)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from profiler.kernel.kallsyms import Kallsyms
from profiler.probes.base import ProbeStatus
from profiler.probes.drops import (
    COUNT, LISTEN_KEY, NETNS_KEY, NETNS_REASON_KEY, REASON_KEY, SITE_KEY, UNCOUNTED_SLOTS, DropCounts,
)
from profiler.snapshot import SnapshotFrame
from profiler.sources.drops import MAX_SITES_PER_INTERVAL, DropSource

# The 6.18 values; the source must only ever use what the layout says.
REASONS = {0: "SKB_NOT_DROPPED_YET", 1: "SKB_CONSUMED", 2: "NOT_SPECIFIED", 6: "SOCKET_RCVBUFF",
           40: "TCP_LISTEN_OVERFLOW", 71: "CPU_BACKLOG"}
UDP_SITE = 0xFFFFFFFF82047670 + 0x437
BACKLOG_SITE = 0xFFFFFFFF81E60AF0 + 0x153
KALLSYMS = Kallsyms.parse("ffffffff82047670 t udp_queue_rcv_one_skb\nffffffff81e60af0 t enqueue_to_backlog\n")


def counts(netns=(), cpus=(), sites=(), listeners=(), rcvqueue=(), uncounted=None, ncpus=2) -> DropCounts:
    """Cumulative map contents: netns=[(inode, reason, n)], cpus=[(reason, [n per cpu])], …"""
    cpu_counts = np.zeros((len(cpus), ncpus), COUNT)
    for row, (_, per_cpu) in enumerate(cpus):
        cpu_counts["count"][row] = per_cpu
    return DropCounts(
        netns_reasons=np.array([(i, r) for i, r, _ in netns], NETNS_REASON_KEY),
        per_netns_reason=np.array([(n,) for *_, n in netns], COUNT),
        cpu_reasons=np.array([(r,) for r, _ in cpus], REASON_KEY),
        per_cpu_reason=cpu_counts,
        sites=np.array([(loc, r, 0) for loc, r, _ in sites], SITE_KEY),
        per_site=np.array([(n,) for *_, n in sites], COUNT),
        listeners=np.array([(i, p, 0) for i, p, _ in listeners], LISTEN_KEY),
        per_listener=np.array([(n,) for *_, n in listeners], COUNT),
        rcvqueue_netns=np.array([(i,) for i, _ in rcvqueue], NETNS_KEY),
        per_rcvqueue_netns=np.array([(n,) for _, n in rcvqueue], COUNT),
        uncounted={**dict.fromkeys(UNCOUNTED_SLOTS, 0), **(uncounted or {})},
    )


class FakeProbe:
    name = "skb_drops"
    reason_names: dict = {}

    def __init__(self, reads: list[DropCounts]):
        self.reads = list(reads)
        self.rcvqueue_status = ProbeStatus("rcvqueue_full", True, "raw_tracepoint:sock_rcvqueue_full")

    def attach(self, loader) -> ProbeStatus:
        self.reason_names = loader.layout.drop_reasons  # as DropProbe on a kernel with drop reasons
        return ProbeStatus(self.name, True, "tracepoint:skb:kfree_skb")

    def read(self, flush: bool = False) -> DropCounts:
        return self.reads.pop(0)

    def detach(self) -> None:
        pass


def attached(reads: list[DropCounts]) -> DropSource:
    source = DropSource(FakeProbe(reads), kallsyms=KALLSYMS)
    statuses = source.attach(SimpleNamespace(layout=SimpleNamespace(drop_reasons=REASONS)))
    assert [s.name for s in statuses] == ["skb_drops", "rcvqueue_full"]
    return source


def collect(source: DropSource):
    frame = SnapshotFrame(0.0, lambda inode: f"pod-{inode}")
    source.collect(frame)
    return frame.freeze(1.0)


def test_pod_drops_are_named_interval_deltas():
    source = attached([
        counts(netns=[(100, 6, 991), (200, 71, 5)], rcvqueue=[(300, 7)]),
        counts(netns=[(100, 6, 991), (200, 71, 12), (100, 71, 3)], rcvqueue=[(300, 7)]),
    ])
    first = {p.netns: p for p in collect(source).pods}
    assert dict(first[100].drops) == {"SOCKET_RCVBUFF": 991}
    assert dict(first[200].drops) == {"CPU_BACKLOG": 5}
    assert first[300].rcvqueue_full == 7 and not first[300].drops
    second = {p.netns: p for p in collect(source).pods}
    # Unchanged counters are absent, not zero: a quiet pod stays out of the interval.
    assert set(second) == {100, 200}
    assert dict(second[100].drops) == {"CPU_BACKLOG": 3}
    assert dict(second[200].drops) == {"CPU_BACKLOG": 7}


def test_cpu_drops_per_cpu_column():
    source = attached([
        counts(cpus=[(71, [0, 40]), (6, [991, 0])]),
        counts(cpus=[(71, [2, 45]), (6, [991, 0])]),
    ])
    first = {c.cpu: dict(c.drops) for c in collect(source).cpus}
    assert first == {0: {"SOCKET_RCVBUFF": 991}, 1: {"CPU_BACKLOG": 40}}
    second = {c.cpu: dict(c.drops) for c in collect(source).cpus}
    assert second == {0: {"CPU_BACKLOG": 2}, 1: {"CPU_BACKLOG": 5}}


def test_drop_sites_are_symbolized_busiest_first():
    source = attached([counts(sites=[(BACKLOG_SITE, 71, 30), (UDP_SITE, 6, 991)])])
    sites = collect(source).drop_sites
    assert [(s.reason, s.symbol, s.count) for s in sites] == [
        ("SOCKET_RCVBUFF", "udp_queue_rcv_one_skb+0x437", 991),
        ("CPU_BACKLOG", "enqueue_to_backlog+0x153", 30),
    ]


def test_drop_sites_are_capped_per_interval():
    many = [(UDP_SITE + i, 6, i + 1) for i in range(MAX_SITES_PER_INTERVAL + 10)]
    sites = collect(attached([counts(sites=many)])).drop_sites
    assert len(sites) == MAX_SITES_PER_INTERVAL
    assert sites[0].count == MAX_SITES_PER_INTERVAL + 10


def test_map_overflows_go_to_lost_and_ignored_frees_do_not():
    source = attached([
        counts(uncounted={"not_specified": 5000, "drops_by_netns_reason_site": 3}),
        counts(uncounted={"not_specified": 9000, "drops_by_netns_reason_site": 10, "listen_overflows_by_port": 1}),
    ])
    assert dict(collect(source).lost) == {"drops_by_netns_reason_site": 3}
    assert dict(collect(source).lost) == {"drops_by_netns_reason_site": 7, "listen_overflows_by_port": 1}
    assert source.ignored_totals == {"not_specified": 9000, "not_a_drop": 0}


def test_listen_overflows_by_port_are_each_intervals_delta_in_the_frame():
    source = attached([
        counts(listeners=[(100, 8080, 60)]),
        counts(listeners=[(100, 8080, 60), (100, 9090, 2)]),
        counts(listeners=[(100, 8080, 60), (100, 9090, 2)]),
    ])

    def interval_overflows() -> dict:
        frame = SnapshotFrame(0.0, lambda inode: f"pod-{inode}")
        source.collect(frame)
        return dict(frame.listen_overflow_drops)

    assert interval_overflows() == {(100, 8080): 60}
    assert interval_overflows() == {(100, 9090): 2}
    assert interval_overflows() == {}


def test_not_attached_writes_nothing():
    class Refused(FakeProbe):
        def attach(self, loader):
            return ProbeStatus(self.name, False, "tracepoint:skb:kfree_skb", "no BPF")

        def read(self, flush: bool = False):
            pytest.fail("read() after a failed attach")

    source = DropSource(Refused([]), kallsyms=KALLSYMS)
    source.attach(SimpleNamespace(layout=SimpleNamespace(drop_reasons=REASONS)))
    snapshot = collect(source)
    assert not snapshot.pods and not snapshot.cpus and not snapshot.drop_sites
