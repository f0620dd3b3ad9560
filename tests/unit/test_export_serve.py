"""`netprof serve`'s running totals and options, without a kernel: counters only ever grow,
quiet pods are zeros, vanished pods age out, and the listen address is taken as given."""
from __future__ import annotations

from types import MappingProxyType

import pytest

from profiler.cli import build_parser
from profiler.errors import NetprofError
from profiler.exports.prometheus import exposition_text
from profiler.probes.base import ProbeStatus
from profiler.serve import GONE_POD_TTL_S, RunningTotals, parse_listen
from profiler.snapshot import CpuInterval, Listener, PodInterval, Snapshot, SoftirqVector
from tests.export_readers import read_prometheus, sample_value


def snapshot(start: float, pods=(), cpus=(), lost=None) -> Snapshot:
    return Snapshot(start, start + 1.0, tuple(pods), cpus=tuple(cpus), lost=MappingProxyType(lost or {}))


def drops(label: str, netns: int, n: int, **extra) -> PodInterval:
    return PodInterval(label, netns, drops=MappingProxyType({"SOCKET_RCVBUFF": n}), **extra)


def test_counters_are_totals_since_start_and_never_go_down():
    now = [0.0]
    totals = RunningTotals(clock=lambda: now[0])
    totals.set_probes([ProbeStatus("skb_drops", True, "tracepoint:skb:kfree_skb")])
    vector = SoftirqVector(count=4, time_ns=4000, latency_log2_ns=(0,) * 10 + (4,))
    conntrack = MappingProxyType({"drop": 2, "count_now": 50})
    seen: list[float] = []
    for step, n in enumerate([5, 0, 7, 1]):
        pods = [drops("web", 10, n, conntrack=conntrack)] if n else []
        totals.add(snapshot(step, pods, [CpuInterval(0, softirq=MappingProxyType({"NET_RX": vector}))],
                            lost={"drops_by_netns": 1}), {10: "web", 1: "host"})
        families = read_prometheus(exposition_text(totals.document()))
        seen.append(sample_value(families, "netprof_drops_total", pod="web", reason="SOCKET_RCVBUFF"))
        assert sample_value(families, "netprof_softirq_runs_total", cpu="0", vector="NET_RX") == 4 * (step + 1)
        assert sample_value(families, "netprof_lost_events_total", map="drops_by_netns") == step + 1
        assert sample_value(families, "netprof_intervals_total") == step + 1
        assert sample_value(families, "netprof_retransmits_total", pod="host") == 0
        if n:
            # A level is the latest value, not a sum.
            assert sample_value(families, "netprof_conntrack_level", pod="web", stat="count") == 50
    assert seen == [5, 5, 12, 13]
    assert sample_value(families, "netprof_conntrack_total", pod="web", stat="drop") == 6
    assert sample_value(families, "netprof_probe_attached", probe="skb_drops") == 1


def test_a_pod_gets_its_better_name_and_a_vanished_one_ages_out():
    now = [0.0]
    totals = RunningTotals(clock=lambda: now[0])
    totals.add(snapshot(0, [drops("netns:10", 10, 3)]), {10: "netns:10"})
    totals.add(snapshot(1), {10: "default/web-0"})
    (pod,) = totals.document()["pods"]
    assert (pod["pod"], pod["drops"]) == ("default/web-0", {"SOCKET_RCVBUFF": 3})
    totals.add(snapshot(2), {})                      # the netns is gone
    now[0] = GONE_POD_TTL_S / 2
    totals.add(snapshot(3), {})
    assert [p["netns"] for p in totals.document()["pods"]] == [10], "kept for a while: a last scrape sees it"
    now[0] = GONE_POD_TTL_S * 2
    totals.add(snapshot(4), {})
    assert totals.document()["pods"] == []


def test_listener_counters_and_depths_accumulate():
    totals = RunningTotals()
    listener = Listener("0.0.0.0", 80, accept_queue_limit=4, overflow_drops=2, accept_queue_depth_log2=(1, 0, 0, 2))
    for step in range(3):
        totals.add(snapshot(step, [PodInterval("web", 10, listeners=(listener,))]), {10: "web"})
    families = read_prometheus(exposition_text(totals.document()))
    assert sample_value(families, "netprof_listen_overflow_drops_total", pod="web", port="80") == 6
    assert sample_value(families, "netprof_listen_accept_queue_depth_bucket", pod="web", port="80", le="+Inf") == 9
    assert sample_value(families, "netprof_listen_accept_queue_depth_bucket", pod="web", port="80", le="0") == 3


@pytest.mark.parametrize("text, expected", [
    ("127.0.0.1:9464", ("127.0.0.1", 9464)),
    ("0.0.0.0:0", ("0.0.0.0", 0)),
    ("[::1]:9464", ("::1", 9464)),
    ("node.local:80", ("node.local", 80)),
])
def test_listen_addresses(text, expected):
    assert parse_listen(text) == expected


@pytest.mark.parametrize("text", ["9464", ":9464", "host:", "host:http", "host:70000"])
def test_bad_listen_addresses_are_one_line_errors(text):
    with pytest.raises(NetprofError):
        parse_listen(text)


def test_serve_defaults_bind_to_loopback_only():
    args = build_parser().parse_args(["serve"])
    assert args.listen == "127.0.0.1:9464" and args.textfile is None and not args.no_listen
