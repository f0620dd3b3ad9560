"""`netprof serve`'s running totals and options, without a kernel: counters only ever grow,
quiet pods are zeros, vanished pods age out, and the listen address is taken as given."""
from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType

import pytest

from profiler.cli import build_parser
from profiler.cost import Cost, ProgramCost
from profiler.netns_names import PodIdentity
from profiler.errors import NetprofError
from profiler.exports.prometheus import exposition_text
from profiler.probes.base import ProbeStatus
from profiler.capture import GONE_NETNS, GONE_POD
from profiler.serve import GONE_POD_TTL_S, ServedCapture, parse_listen
from profiler.snapshot import CpuInterval, DropSite, Listener, PodInterval, Snapshot, SoftirqVector
from tests.export_readers import read_prometheus, sample_value


def snapshot(start: float, pods=(), cpus=(), lost=None) -> Snapshot:
    return Snapshot(start, start + 1.0, tuple(pods), cpus=tuple(cpus), lost=MappingProxyType(lost or {}))


def drops(label: str, netns: int, n: int, **extra) -> PodInterval:
    return PodInterval(label, netns, drops=MappingProxyType({"SOCKET_RCVBUFF": n}), **extra)


def test_counters_are_totals_since_start_and_never_go_down():
    totals = ServedCapture()
    totals.set_probes([ProbeStatus("skb_drops", True, "tracepoint:skb:kfree_skb"),
                       ProbeStatus("tcp_retransmits", True, "tracepoint:tcp:tcp_retransmit_skb")])
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
            assert sample_value(families, "netprof_nf_conntrack_entries", pod="web") == 50
    assert seen == [5, 5, 12, 13]
    assert sample_value(families, "netprof_nf_conntrack_stat_drop", pod="web") == 6
    assert sample_value(families, "netprof_probe_attached", probe="skb_drops") == 1


def test_a_pod_gets_its_better_name_and_a_vanished_one_ages_out():
    totals = ServedCapture(interval_s=GONE_POD_TTL_S / 4)    # gone for more than 4 intervals: pruned
    totals.add(snapshot(0, [drops("netns:10", 10, 3)]), {10: "netns:10"})
    totals.add(snapshot(1), {10: "default/web-0"})
    (pod,) = totals.document()["pods"]
    assert (pod["pod"], pod["drops"]) == ("default/web-0", {"SOCKET_RCVBUFF": 3})
    totals.add(snapshot(2), {})                      # the netns is gone
    totals.add(snapshot(3), {})
    assert [p["netns"] for p in totals.document()["pods"]] == [10], "kept for a while: a last scrape sees it"
    for step in range(4, 7):
        totals.add(snapshot(step), {})
    # Its series leaves; its counts stay in the sum, under "(pods gone)".
    assert [(p["pod"], p["netns"], p["drops"]) for p in totals.document()["pods"]] == [
        (GONE_POD, GONE_NETNS, {"SOCKET_RCVBUFF": 3})]


def test_a_reused_netns_inode_is_a_new_pod_from_zero():
    totals = ServedCapture()
    totals.add(snapshot(0, [drops("lab1-server", 10, 3)]), {10: "lab1-server"})
    totals.add(snapshot(1), {})                                   # its netns is gone
    totals.add(snapshot(2), {10: "lab2-sender"})                  # the kernel reused the inode
    pod, gone = totals.document()["pods"]
    assert (pod["pod"], pod["drops"]) == ("lab2-sender", {}), "the old pod's drops are not the new one's"
    assert (gone["pod"], gone["drops"]) == (GONE_POD, {"SOCKET_RCVBUFF": 3}), "nor are they lost"


def test_listener_counters_and_fill_ratios_accumulate():
    totals = ServedCapture()
    # Per interval: one empty sample and two at 5 of a limit of 4 (ratio 1.25).
    listener = Listener("0.0.0.0", 80, accept_queue_limit=4, overflow_drops=2, accept_queue_depth_log2=(1, 0, 0, 2),
                        accept_queue_fill_ratio=(1, 0, 0, 0, 0, 0, 2), accept_queue_fill_ratio_sum=2.5)
    for step in range(3):
        totals.add(snapshot(step, [PodInterval("web", 10, listeners=(replace(listener, accept_queue_peak=4 + step),))]),
                   {10: "web"})
    families = read_prometheus(exposition_text(totals.document()))
    where = {"pod": "web", "port": "80"}
    assert sample_value(families, "netprof_listen_overflow_drops_total", **where) == 6
    assert sample_value(families, "netprof_listen_accept_queue_fill_ratio_bucket", le="+Inf", **where) == 9
    assert sample_value(families, "netprof_listen_accept_queue_fill_ratio_bucket", le="0.0", **where) == 3
    assert sample_value(families, "netprof_listen_accept_queue_fill_ratio_bucket", le="1.0", **where) == 3
    assert sample_value(families, "netprof_listen_accept_queue_fill_ratio_bucket", le="1.25", **where) == 9
    assert sample_value(families, "netprof_listen_accept_queue_fill_ratio_sum", **where) == 7.5
    assert sample_value(families, "netprof_listen_accept_queue_fill_ratio_count", **where) == 9
    assert sample_value(families, "netprof_listen_accept_queue_peak", **where) == 6, "the peak since start"


def test_online_cpus_and_known_pods_have_series_from_the_start():
    totals = ServedCapture()
    totals.set_probes([ProbeStatus("softnet", True, "procfs:/proc/net/softnet_stat"),
                       ProbeStatus("conntrack_stats", True, "procfs:/proc/net/stat/nf_conntrack")])
    totals.set_node({"release": "6.18.44", "btf": True, "kprobes": False}, [0, 1])
    vector = SoftirqVector(count=4, time_ns=4000, latency_log2_ns=(0,) * 10 + (4,))
    identity = PodIdentity("payments", "api-0", "uid-1", ("api",), "containerd")
    totals.add(snapshot(0, cpus=[CpuInterval(0, softirq=MappingProxyType({"NET_RX": vector}))]),
               {10: "payments/api-0", 1: "host"}, {10: identity})
    families = read_prometheus(exposition_text(totals.document()))
    assert sample_value(families, "netprof_softirq_runs_total", cpu="1", vector="NET_RX") == 0, "a quiet CPU"
    assert sample_value(families, "netprof_softnet_times_squeezed_total", cpu="1") == 0
    assert sample_value(families, "netprof_softirq_latency_seconds_count", cpu="1", vector="NET_RX") == 0
    # Pods by namespace and name as Kubernetes knows them; the node's own netns explicitly.
    assert sample_value(families, "netprof_nf_conntrack_stat_drop", namespace="payments", pod="api-0",
                        netns="10") == 0
    assert sample_value(families, "netprof_nf_conntrack_stat_drop", namespace="", pod="host", netns="1") == 0
    assert "netprof_rcvqueue_full" not in families, "its probe is not attached: no zeros claimed for it"
    (info,) = families["netprof_build_info"]
    assert info.labels["kernel"] == "6.18.44"


def test_drop_sites_keep_their_series_and_the_rest_is_other(monkeypatch):
    monkeypatch.setattr("profiler.serve.MAX_DROP_SITES", 2)
    totals = ServedCapture()
    intervals = [
        [DropSite("NETFILTER_DROP", "nf_hook_slow+0x8c", 5), DropSite("SOCKET_RCVBUFF", "udp_queue_rcv_one_skb+0x1a", 3)],
        [DropSite("SOCKET_RCVBUFF", "__udp_enqueue_schedule_skb+0x2f", 4),   # past the cap: "other"
         DropSite("NETFILTER_DROP", "nf_hook_slow+0x8c", 1)],
    ]
    others = []
    for step, sites in enumerate(intervals):
        reasons: dict[str, int] = {}
        for site in sites:
            reasons[site.reason] = reasons.get(site.reason, 0) + site.count
        totals.add(Snapshot(step, step + 1.0, (PodInterval("web", 10, drops=MappingProxyType(reasons)),),
                            drop_sites=tuple(sites)), {10: "web"})
        families = read_prometheus(exposition_text(totals.document()))
        others.append(sample_value(families, "netprof_drop_site_drops_total", reason="SOCKET_RCVBUFF", site="other"))
    assert sample_value(families, "netprof_drop_site_drops_total", reason="NETFILTER_DROP", site="nf_hook_slow+0x8c") == 6
    assert sample_value(families, "netprof_drop_site_drops_total", reason="SOCKET_RCVBUFF",
                        site="udp_queue_rcv_one_skb+0x1a") == 3
    assert others == [0, 4]
    assert len({s.labels["site"] for s in families["netprof_drop_site_drops"]}) == 3, "two sites and other"


def test_cost_accumulates_over_intervals():
    totals = ServedCapture()
    for step in range(3):
        cost = Cost(duration_s=1.0, programs=(ProgramCost("drops", "tracepoint:skb:kfree_skb", 100, 50_000, 1),),
                    process_user_cpu_s=0.01, process_system_cpu_s=0.02, rss_bytes=1000 + step, peak_rss_bytes=2000,
                    online_cpus=2, timed_s=1.0 if step == 0 else 0.0)
        totals.add(snapshot(step), {}, cost=cost)
    families = read_prometheus(exposition_text(totals.document()))
    hook = {"program": "drops", "hook": "tracepoint:skb:kfree_skb"}
    assert sample_value(families, "netprof_bpf_runs_total", **hook) == 300
    assert sample_value(families, "netprof_bpf_run_seconds_total", **hook) == pytest.approx(150e-6)
    assert sample_value(families, "netprof_bpf_recursion_misses_total", **hook) == 3
    assert sample_value(families, "netprof_bpf_timed_seconds_total") == 1.0
    assert sample_value(families, "netprof_process_cpu_seconds_total", mode="system") == pytest.approx(0.06)
    assert sample_value(families, "netprof_process_resident_memory_bytes") == 1002, "the latest, not a sum"


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


def test_no_per_cpu_reaches_the_serve_options(monkeypatch):
    seen = []
    monkeypatch.setattr("profiler.serve.run_serve", lambda options, log: seen.append(options) or 0)
    from profiler.cli import main

    assert main(["serve", "--no-per-cpu"]) == 0 and main(["serve"]) == 0
    assert [options.per_cpu for options in seen] == [False, True]
