"""Every export format from one synthetic capture, read back by independent readers
(tests/export_readers.py), with the counts checked against the capture."""
from __future__ import annotations

import json
import math
import os
import stat
from collections import Counter
from importlib import resources
from types import MappingProxyType

import jsonschema
import numpy as np
import pytest

from profiler.capture import Capture
from profiler.cost import Cost, ProgramCost
from profiler.inert import inert
from profiler.netns_names import PodIdentity
from profiler.cli import main
from profiler.exports import EXPORT_FORMATS, render, write_all
from profiler.exports.folded import folded_text
from profiler.exports.histograms import (
    bucket_percentiles, capture_histograms, depth_bounds, histograms_csv, histograms_json, log2_ns_bounds,
    log2_percentiles_ns,
)
from profiler.exports.prometheus import exposition_text
from profiler.exports.speedscope import speedscope_json
from profiler.kernel.features import KernelInfo
from profiler.probes.base import ProbeStatus
from profiler.probes.softirq import LOG2_SLOTS, log2_slots
from profiler.snapshot import CpuInterval, DropSite, Listener, PodInterval, Snapshot, SoftirqVector, StackSample
from profiler.system.listeners import FILL_RATIO_BOUNDS, depth_bucket, fill_ratio, fill_ratio_bucket
from tests.export_readers import (
    FormatError, of_kind, parse_folded, read_csv, read_prometheus, read_speedscope, sample_value,
)

KERNEL = KernelInfo("6.18.44", btf=True, kprobes=False, tracefs="/sys/kernel/tracing", headers=None)
UDP_PATH = ("entry_SYSCALL_64_after_hwframe", "do_syscall_64", "__x64_sys_sendto", "udp_sendmsg",
            "net_rx_action", "udp_queue_rcv_one_skb", "sk_skb_reason_drop")
NFT_PATH = ("handle_softirqs", "nf_hook_slow", "nft_do_chain [nf_tables]", "sk_skb_reason_drop")
RETRANSMIT_PATH = ("run_timer_softirq", "tcp_write_timer", "tcp_retransmit_timer", "tcp_retransmit_skb",
                   "__tcp_retransmit_skb")
EVIL = "evil;pod\nname "   # a label netprof does not control (netns names are anyone's)


def sample_capture() -> Capture:
    """Two intervals: receiver drops 600 + 391 SOCKET_RCVBUFF (one stack), lossy retransmits,
    a pod whose label needs cleaning, softirq histograms on two CPUs, a listener's depths."""
    cap = Capture(KERNEL, [ProbeStatus("skb_drops", True, "tracepoint:skb:kfree_skb"),
                           ProbeStatus("drop_stacks", False, "bpf_get_stackid", "refused"),
                           ProbeStatus("tcp_retransmits", True, "tracepoint:tcp:tcp_retransmit_skb"),
                           ProbeStatus("softnet", True, "procfs:/proc/net/softnet_stat"),
                           ProbeStatus("netns_counters", True, "/proc/net/netstat+snmp in each pod netns"),
                           ProbeStatus("conntrack_stats", True, "procfs:/proc/net/stat/nf_conntrack")],
                  known_pods={11: "receiver", 12: "lossy", 13: EVIL, 1: "host"},
                  pod_identities={12: PodIdentity("payments", "lossy", "uid-12", ("app",), "containerd")})
    # Queue delays: 10 of ~600 ns; then 2 of ~700 ns and 4 of ~1500 ns (sums inside their buckets).
    rx1 = SoftirqVector(count=10, time_ns=40_000, latency_log2_ns=(0,) * 11 + (6, 4),
                        queue_delay_log2_ns=(0,) * 9 + (10,), queue_delay_ns=6_000)
    rx2 = SoftirqVector(count=6, time_ns=30_000, latency_log2_ns=(0,) * 12 + (3, 3),
                        queue_delay_log2_ns=(0,) * 9 + (2, 4), queue_delay_ns=7_400)
    # 8 samples: 2 empty, 1 of depth 5 (5/64 of the limit), 5 at 65 (65/64).
    listener = Listener("0.0.0.0", 8080, accept_queue_peak=65, accept_queue_limit=64, overflow_drops=3,
                        samples_full=4, accept_queue_depth_log2=(2, 0, 0, 1, 0, 0, 0, 5),
                        accept_queue_fill_ratio=(2, 1, 0, 0, 0, 0, 5), accept_queue_fill_ratio_sum=330 / 64)
    cap.add(Snapshot(0.0, 1.0,
                     (PodInterval("receiver", 11, drops=MappingProxyType({"SOCKET_RCVBUFF": 600})),
                      PodInterval("lossy", 12, retransmits=30, retransmitted_segments=41,
                                  drops=MappingProxyType({"NETFILTER_DROP": 7}), listeners=(listener,),
                                  netstat=MappingProxyType({"TcpExt.ListenOverflows": 3, "Tcp.RetransSegs": 41}),
                                  conntrack=MappingProxyType({"insert_failed": 2, "count_now": 10, "max_now": 100}))),
                     cpus=(CpuInterval(0, softirq=MappingProxyType({"NET_RX": rx1}),
                                       softnet=MappingProxyType({"processed": 100, "time_squeeze": 3}),
                                       drops=MappingProxyType({"SOCKET_RCVBUFF": 600})),),
                     drop_sites=(DropSite("SOCKET_RCVBUFF", "udp_queue_rcv_one_skb+0x1a", 600),),
                     stacks=(StackSample("receiver", 11, "SOCKET_RCVBUFF", UDP_PATH, 600, 6),
                             StackSample("lossy", 12, "TCP_RETRANSMIT", RETRANSMIT_PATH, 30),
                             StackSample("lossy", 12, "NETFILTER_DROP", NFT_PATH, 7)),
                     stack_sampling=MappingProxyType({"drop_walks": 13, "drop_walk_ns": 390_000,
                                                      "drop_skipped_spacing": 594, "drop_skipped_budget": 0,
                                                      "drop_pending_now": 3, "drop_share_ppm_now": 5000})))
    cap.add(Snapshot(1.0, 2.0,
                     (PodInterval("receiver", 11, drops=MappingProxyType({"SOCKET_RCVBUFF": 391})),
                      PodInterval(EVIL, 13, drops=MappingProxyType({"SOCKET_RCVBUFF": 5}))),
                     cpus=(CpuInterval(0, softirq=MappingProxyType({"NET_RX": rx2})),
                           CpuInterval(1, softirq=MappingProxyType({"NET_RX": rx2}))),
                     stacks=(StackSample("receiver", 11, "SOCKET_RCVBUFF", UDP_PATH, 391, 4),
                             StackSample(EVIL, 13, "SOCKET_RCVBUFF", UDP_PATH, 5)),
                     lost={"drop_stacks_no_stack_id": 2},
                     stack_sampling=MappingProxyType({"drop_walks": 4, "drop_walk_ns": 110_000,
                                                      "drop_skipped_spacing": 387, "drop_skipped_budget": 5,
                                                      "drop_pending_now": 1, "drop_share_ppm_now": 5000})))
    cap.cost = Cost(duration_s=2.0, programs=(ProgramCost("drops", "tracepoint:skb:kfree_skb", 1003, 401_200, 4),),
                    process_user_cpu_s=0.25, process_system_cpu_s=0.125, rss_bytes=90_000_000,
                    peak_rss_bytes=95_000_000, online_cpus=2, timed_s=1.0)
    return cap


@pytest.fixture
def doc() -> dict:
    return sample_capture().to_json()


def event_totals(doc: dict) -> Counter[tuple[str, str]]:
    """(pod, reason) → events, from the capture's own per-pod counters."""
    totals: Counter[tuple[str, str]] = Counter()
    for pod in doc["pods"]:
        for reason, count in pod["drops"].items():
            totals[(pod["pod"], reason)] += count
        if pod["retransmits"]:
            totals[(pod["pod"], "TCP_RETRANSMIT")] += pod["retransmits"]
    return totals


def clean(label: str) -> str:
    return label.replace(";", "_").replace("\n", "_").strip()


def test_capture_json_carries_stacks_and_validates(doc):
    schema = json.loads((resources.files("profiler") / "schemas/profile-v1.json").read_text())
    jsonschema.validate(doc, schema)
    assert doc["stacks"][0] == {"pod": "receiver", "netns": 11, "reason": "SOCKET_RCVBUFF",
                                "frames": list(UDP_PATH), "count": 991, "samples": 10}
    # Stacks are sampled: the section says how, so weights can be read (bpf/stacks.h).
    sampling = doc["stack_sampling"]
    assert (sampling["share"], sampling["walks"], sampling["walk_ns"], sampling["skipped"], sampling["pending"]) == (
        0.005, 17, 500_000, 991 + 5 + 7 + 1 - 17, 1)
    assert sampling["events"] == 991 + 5 + 7 and sampling["ratio"] == round(17 / 1003, 6)
    assert sampling["walk_cpu_share"] == round(500_000 / (2.0 * 1e9 * 2), 6)
    assert [s["count"] for s in doc["stacks"]] == sorted((s["count"] for s in doc["stacks"]), reverse=True)


def test_folded_stacks_parse_and_add_up_to_the_capture(doc):
    stacks = parse_folded(folded_text(doc))
    assert stacks[("receiver", "SOCKET_RCVBUFF", *UDP_PATH)] == 991
    assert stacks[("lossy", "TCP_RETRANSMIT", *RETRANSMIT_PATH)] == 30
    assert stacks[("lossy", "NETFILTER_DROP", *NFT_PATH)] == 7, "module frames keep their [module]"
    by_pod_reason: Counter[tuple[str, str]] = Counter()
    for frames, count in stacks.items():
        by_pod_reason[frames[:2]] += count
    expected = {(clean(pod), reason): n for (pod, reason), n in event_totals(doc).items()}
    assert by_pod_reason == expected
    assert sum(stacks.values()) == sum(s["count"] for s in doc["stacks"])


def test_folded_frames_from_untrusted_labels_cannot_break_lines(doc):
    text = folded_text(doc)
    assert len(text.splitlines()) == len(doc["stacks"])
    assert ("evil_pod_name", "SOCKET_RCVBUFF", *UDP_PATH) in parse_folded(text)


def test_folded_reader_rejects_what_flamegraph_tools_would_misread():
    for bad in ("a;b 0\n", "a;;b 3\n", "a;b\n", "a;b 3", "a;b -1\n", "a;b 1.5\n", "a ;b 2\n", " 4\n"):
        with pytest.raises(FormatError):
            parse_folded(bad)


def test_speedscope_file_validates_and_matches_the_folded_stacks(doc):
    profiles = read_speedscope(speedscope_json(doc))
    names = list(profiles)
    folded = parse_folded(folded_text(doc))
    # Drops and retransmits never share a profile: each kind has its own "all pods" profile
    # (the folded stacks of that kind), then one per pod, busiest first, stacks under reasons.
    assert names == ["drops: all pods", "drops: receiver", "drops: lossy", "drops: evil_pod_name",
                     "retransmits: all pods", "retransmits: lossy"]
    assert profiles["drops: all pods"] == of_kind(folded, "drops")
    assert profiles["retransmits: all pods"] == of_kind(folded, "retransmits")
    assert profiles["drops: all pods"] and profiles["retransmits: all pods"]
    assert profiles["retransmits: lossy"] == {("TCP_RETRANSMIT", *RETRANSMIT_PATH): 30}
    assert profiles["drops: lossy"] == {("NETFILTER_DROP", *NFT_PATH): 7}
    for pod in doc["pods"]:
        expected = sum(n for (name, _), n in event_totals(doc).items() if name == pod["pod"])
        got = sum(sum(profiles.get(f"{kind}: {clean(pod['pod'])}", {}).values()) for kind in ("drops", "retransmits"))
        assert got == expected


def test_speedscope_reader_enforces_the_spec():
    good = json.loads(speedscope_json(sample_capture().to_json()))
    for breaks in (
        lambda d: d.pop("shared"),
        lambda d: d.update({"$schema": "https://example.org/other.json"}),
        lambda d: d["profiles"][0].update({"unit": "parsecs"}),
        lambda d: d["profiles"][0]["weights"].pop(),
        lambda d: d["profiles"][0]["samples"][0].append(len(d["shared"]["frames"])),
        lambda d: d["profiles"][0].update({"endValue": 1}),
    ):
        broken = json.loads(json.dumps(good))
        breaks(broken)
        with pytest.raises((FormatError, jsonschema.ValidationError)):
            read_speedscope(json.dumps(broken))


def test_no_stacks_gives_empty_but_valid_files():
    doc = Capture(KERNEL, []).to_json()
    assert folded_text(doc) == "" and parse_folded(folded_text(doc)) == {}
    assert read_speedscope(speedscope_json(doc)) == {"drops: all pods": {}}
    assert json.loads(histograms_json(doc))["histograms"] == []
    assert read_csv(histograms_csv(doc)) == []


def test_log2_bounds_match_the_kernels_bucketing():
    rng = np.random.default_rng(7)
    values = np.concatenate([[0, 1, 2, 3], rng.integers(0, 1 << 34, 2000)])
    slots = log2_slots(values)
    lower, upper = log2_ns_bounds(LOG2_SLOTS)
    for value, slot in zip(values.tolist(), slots.tolist()):
        assert lower[slot] <= value < upper[slot], (value, slot, lower[slot], upper[slot])
    assert math.isinf(upper[-1]) and lower[0] == 0 and upper[0] == 2


def test_depth_bounds_match_the_samplers_bucketing():
    lower, upper = depth_bounds(18)
    for depth in list(range(300)) + [65535, 65536]:
        bucket = depth_bucket(depth)
        assert lower[bucket] <= depth < upper[bucket], depth


def test_percentiles_interpolate_linearly_inside_the_bucket():
    # 4 values in [4, 8): p50 is halfway in.
    assert bucket_percentiles([0, 0, 4], [0, 2, 4], [2, 4, 8], [0.5]).tolist() == [6.0]
    # 10 values: 5 in [0, 2), 5 in [8, 16): p90 is 4/5 of the way into the second bucket.
    assert bucket_percentiles([5, 0, 5], [0, 2, 8], [2, 8, 16], [0.9]).tolist() == [pytest.approx(14.4)]
    # The open-ended last bucket only says "at least".
    assert bucket_percentiles([1, 9], [0, 2], [2, math.inf], [0.99]).tolist() == [2.0]
    assert np.isnan(bucket_percentiles([0, 0], [0, 2], [2, 4], [0.5])).all()
    assert log2_percentiles_ns([]) == [None, None, None]
    # q = 0 is the smallest value's bucket, not an empty one before it.
    assert bucket_percentiles([0, 3], [0, 2], [2, 4], [0.0]).tolist() == [2.0]


def test_percentiles_land_in_the_bucket_of_the_true_percentile():
    """Against raw samples: the estimate from the kernel's buckets lies in the same bucket as
    numpy's exact percentile of the values (the most a log2 histogram can promise)."""
    rng = np.random.default_rng(11)
    for _ in range(20):
        values = rng.lognormal(mean=rng.uniform(6, 14), sigma=rng.uniform(0.2, 2.0), size=5000).astype(np.uint64)
        counts = np.bincount(log2_slots(values), minlength=LOG2_SLOTS)
        estimates = log2_percentiles_ns(counts.tolist())
        for q, estimate in zip((50, 90, 99), estimates):
            exact = np.percentile(values, q, method="inverted_cdf")
            assert log2_slots(np.array([int(exact)]))[0] == log2_slots(np.array([int(estimate)]))[0], (q, exact, estimate)


def test_histograms_json_has_explicit_bounds_and_percentiles(doc):
    document = json.loads(histograms_json(doc))
    assert document["schema"] == "netprof.histograms/v1"
    by_key = {(h["name"], json.dumps(h["labels"], sort_keys=True)): h for h in document["histograms"]}
    latency = by_key[("softirq_latency_ns", json.dumps({"cpu": 0, "vector": "NET_RX"}, sort_keys=True))]
    cpu0 = next(c for c in doc["cpus"] if c["cpu"] == 0)["softirq"]["NET_RX"]
    assert [b["count"] for b in latency["buckets"]] == cpu0["latency_log2_ns"]
    assert latency["count"] == cpu0["count"] == 16
    for histogram in document["histograms"]:
        buckets = histogram["buckets"]
        assert all(a["hi"] == b["lo"] for a, b in zip(buckets, buckets[1:])), "contiguous [lo, hi)"
        assert histogram["count"] == sum(b["count"] for b in buckets)
        p50, p90, p99 = (histogram["percentiles"][k] for k in ("p50", "p90", "p99"))
        assert buckets[0]["lo"] <= p50 <= p90 <= p99
    depth = by_key[("listen_accept_queue_depth",
                    json.dumps({"pod": "lossy", "netns": 12, "address": "0.0.0.0", "port": 8080}, sort_keys=True))]
    assert [(b["lo"], b["hi"]) for b in depth["buckets"][:4]] == [(0, 1), (1, 2), (2, 4), (4, 8)]
    # The queue never held more than its peak (65): percentiles stay inside [64, 66), not
    # spread over [64, 128).
    assert depth["count"] == 8 and depth["max"] == 65 and 64 <= depth["percentiles"]["p50"] < 66


def test_histograms_csv_rows_agree_with_the_json(doc):
    rows = read_csv(histograms_csv(doc))
    document = json.loads(histograms_json(doc))
    assert len(rows) == sum(len(h["buckets"]) for h in document["histograms"])
    totals: Counter[tuple[str, str, str, str]] = Counter()
    for row in rows:
        float(row["lo"]), float(row["hi"])  # "inf" parses too
        assert int(row["count"]) >= 0
        totals[(row["histogram"], row["cpu"], row["vector"], row["port"])] += int(row["count"])
    for histogram in document["histograms"]:
        labels = histogram["labels"]
        key = (histogram["name"], str(labels.get("cpu", "")), labels.get("vector", ""), str(labels.get("port", "")))
        assert totals[key] == histogram["count"]


def test_every_distribution_of_the_capture_is_a_histogram(doc):
    names = Counter(h.name for h in capture_histograms(doc))
    assert names == {"softirq_latency_ns": 2, "softirq_queue_delay_ns": 2, "listen_accept_queue_depth": 1}


def test_prometheus_exposition_parses_and_counts_agree(doc):
    families = read_prometheus(exposition_text(doc))
    assert sample_value(families, "netprof_drops_total", namespace="", pod="receiver", netns="11",
                        reason="SOCKET_RCVBUFF") == 991
    assert sample_value(families, "netprof_retransmits_total", namespace="payments", pod="lossy") == 30
    assert sample_value(families, "netprof_retransmitted_segments_total", pod="lossy") == 41
    assert sample_value(families, "netprof_retransmits_total", namespace="", pod="host") == 0, "quiet pods are zeros"
    assert sample_value(families, "netprof_drops_total", pod=inert(EVIL, multiline=True), reason="SOCKET_RCVBUFF") == 5, \
        "label values are made inert (the format escapes their line breaks itself), then escaped"
    assert sample_value(families, "netprof_listen_overflow_drops_total", pod="lossy", port="8080") == 3
    assert sample_value(families, "netprof_listen_accept_queue_limit", pod="lossy", port="8080") == 64
    assert sample_value(families, "netprof_listen_accept_queue_peak", pod="lossy", port="8080") == 65
    assert sample_value(families, "netprof_lost_events_total", map="drop_stacks_no_stack_id") == 2
    assert sample_value(families, "netprof_probe_attached", probe="drop_stacks") == 0
    assert sample_value(families, "netprof_softirq_runs_total", cpu="0", vector="NET_RX") == 16
    assert sample_value(families, "netprof_softirq_seconds_total", cpu="0", vector="NET_RX") == pytest.approx(70e-6)


def test_pods_carry_namespace_and_pod_as_kube_state_metrics_does(doc):
    families = read_prometheus(exposition_text(doc))
    pods = {(s.labels["namespace"], s.labels["pod"], s.labels["netns"])
            for s in families["netprof_retransmits"]}
    # A Kubernetes pod by its namespace and name; netns that are not pods by their label.
    assert pods == {("payments", "lossy", "12"), ("", "receiver", "11"), ("", inert(EVIL, multiline=True), "13"),
                    ("", "host", "1")}


def test_one_metric_per_counter_named_as_node_exporter_names_it(doc):
    families = read_prometheus(exposition_text(doc))
    assert sample_value(families, "netprof_softnet_times_squeezed_total", cpu="0") == 3
    assert sample_value(families, "netprof_softnet_processed_total", cpu="0") == 100
    assert sample_value(families, "netprof_netstat_TcpExt_ListenOverflows", pod="lossy") == 3
    assert sample_value(families, "netprof_netstat_Tcp_RetransSegs", pod="lossy") == 41
    assert sample_value(families, "netprof_nf_conntrack_stat_insert_failed", pod="lossy") == 2
    assert sample_value(families, "netprof_nf_conntrack_entries", pod="lossy") == 10
    assert sample_value(families, "netprof_nf_conntrack_entries_limit", pod="lossy") == 100
    for family, samples in families.items():
        generic = {"counter", "stat"} & {label for sample in samples for label in sample.labels}
        assert not generic, f"{family} has a generic {generic} label"


def test_series_exist_at_zero_once_their_probe_is_attached(doc):
    families = read_prometheus(exposition_text(doc))
    # CPU 1 had no softnet counter move, the host no listen overflow nor conntrack failure.
    assert sample_value(families, "netprof_softnet_times_squeezed_total", cpu="1") == 0
    assert sample_value(families, "netprof_netstat_TcpExt_ListenOverflows", pod="host") == 0
    assert sample_value(families, "netprof_nf_conntrack_stat_insert_failed", pod="host") == 0
    # Per-reason zeros: every pod for every reason seen on the node, and no other reason.
    assert sample_value(families, "netprof_drops_total", pod="host", reason="NETFILTER_DROP") == 0
    assert {s.labels["reason"] for s in families["netprof_drops"]} == {"SOCKET_RCVBUFF", "NETFILTER_DROP"}
    assert sample_value(families, "netprof_cpu_drops_total", cpu="1", reason="SOCKET_RCVBUFF") == 0
    # A probe that is not attached gets no zeros.
    doc["probes"] = [p for p in doc["probes"] if p["name"] not in ("tcp_retransmits", "softnet")]
    families = read_prometheus(exposition_text(doc))
    assert [s.labels["pod"] for s in families["netprof_retransmits"]] == ["lossy"]
    assert [s.labels["cpu"] for s in families["netprof_softnet_times_squeezed"]] == ["0"]


def test_drop_sites_add_up_to_the_drops_with_an_other_bucket(doc):
    families = read_prometheus(exposition_text(doc))
    sites = {(s.labels["reason"], s.labels["site"]): s.value for s in families["netprof_drop_site_drops"]}
    assert sites == {("SOCKET_RCVBUFF", "udp_queue_rcv_one_skb+0x1a"): 600, ("SOCKET_RCVBUFF", "other"): 396,
                     ("NETFILTER_DROP", "other"): 7}
    for reason in ("SOCKET_RCVBUFF", "NETFILTER_DROP"):
        drops = sum(s.value for s in families["netprof_drops"] if s.labels["reason"] == reason)
        assert sum(v for (r, _), v in sites.items() if r == reason) == drops


def test_netprof_identity_and_cost_are_metrics(doc):
    families = read_prometheus(exposition_text(doc))
    (info,) = families["netprof_build_info"]
    assert info.value == 1 and info.labels["version"] == "0.1.0" and info.labels["kernel"] == "6.18.44"
    hook = {"program": "drops", "hook": "tracepoint:skb:kfree_skb"}
    assert sample_value(families, "netprof_bpf_runs_total", **hook) == 1003
    assert sample_value(families, "netprof_bpf_run_seconds_total", **hook) == pytest.approx(401_200e-9)
    assert sample_value(families, "netprof_bpf_recursion_misses_total", **hook) == 4
    assert sample_value(families, "netprof_bpf_timed_seconds_total") == 1.0
    assert sample_value(families, "netprof_process_cpu_seconds_total", mode="user") == 0.25
    assert sample_value(families, "netprof_process_cpu_seconds_total", mode="system") == 0.125
    assert sample_value(families, "netprof_process_resident_memory_bytes") == 90_000_000


def histogram_series(samples: list) -> dict[tuple, dict[str, float]]:
    """Series (labels without le) → {"le=…": bucket, "_count": …, "_sum": …}."""
    series: dict[tuple, dict[str, float]] = {}
    for sample in samples:
        key = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "le"))
        part = f"le={sample.labels['le']}" if sample.name.endswith("_bucket") else sample.name.rsplit("_", 1)[1]
        series.setdefault(key, {})[part] = sample.value
    return series


def test_every_histogram_has_one_le_set_and_count_and_sum(doc):
    families = read_prometheus(exposition_text(doc))
    histograms = [name for name, samples in families.items() if any(s.name.endswith("_bucket") for s in samples)]
    assert sorted(histograms) == ["netprof_listen_accept_queue_fill_ratio", "netprof_softirq_latency_seconds",
                                  "netprof_softirq_queue_delay_seconds"]
    for name in histograms:
        series = histogram_series(families[name])
        le_sets = {frozenset(k for k in parts if k.startswith("le=")) for parts in series.values()}
        assert len(le_sets) == 1, f"{name}: one le set for every series"
        for parts in series.values():
            assert parts["count"] == parts["le=+Inf"] and "sum" in parts, name


def test_listen_queue_fill_ratio_histogram(doc):
    families = read_prometheus(exposition_text(doc))
    (series,) = histogram_series(families["netprof_listen_accept_queue_fill_ratio"]).values()
    buckets = {k.removeprefix("le="): v for k, v in series.items() if k.startswith("le=")}
    assert buckets == {"0.0": 2, "0.25": 3, "0.5": 3, "0.75": 3, "0.9": 3, "1.0": 3, "1.25": 8, "1.5": 8,
                       "2.0": 8, "+Inf": 8}
    assert series["sum"] == pytest.approx(330 / 64) and series["count"] == 8
    # histogram_quantile over it says "above the limit" for the queue that sat at 65 of 64.
    assert 1.0 < prometheus_quantile(0.9, [(float(le), n) for le, n in buckets.items()]) <= 1.25


def test_fill_ratio_buckets_are_le_bounds():
    assert [fill_ratio_bucket(fill_ratio(d, 4)) for d in (0, 1, 2, 3, 4, 5, 6, 8, 9)] == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert fill_ratio(1, 0) == 1.0, "listen(fd, 0): one waiting connection fills it"
    assert fill_ratio_bucket(fill_ratio(65, 64)) == FILL_RATIO_BOUNDS.index(1.25)


def test_per_cpu_series_can_be_summed_over_the_node(doc):
    families = read_prometheus(exposition_text(doc, per_cpu=False))
    for name, samples in families.items():
        assert all("cpu" not in s.labels for s in samples), name
    assert sample_value(families, "netprof_softirq_runs_total", vector="NET_RX") == 16 + 6
    delay = histogram_series(families["netprof_softirq_queue_delay_seconds"])
    (series,) = delay.values()
    assert series["count"] == 16 + 6 and series["sum"] == pytest.approx((6_000 + 7_400 * 2) / 1e9)


def prometheus_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    """histogram_quantile() as Prometheus computes it (promql/quantile.go): linear inside the
    bucket, from 0 for the first one."""
    buckets = sorted(buckets)
    total = buckets[-1][1]
    rank = q * total
    index = next(i for i, (_, count) in enumerate(buckets) if count >= rank)
    if math.isinf(buckets[index][0]):
        return buckets[index - 1][0]
    start, below = (0.0, 0.0) if index == 0 else buckets[index - 1]
    end, count = buckets[index]
    return start + (end - start) * (rank - below) / (count - below)


def test_prometheus_histograms_are_the_kernels_buckets(doc):
    families = read_prometheus(exposition_text(doc))
    samples = [s for s in families["netprof_softirq_latency_seconds"] if s.labels.get("cpu") == "0"]
    buckets = [(float(s.labels["le"]), s.value) for s in samples if s.name.endswith("_bucket")]
    counts = [c for _, c in sorted(buckets)]
    assert counts == sorted(counts), "cumulative"
    cpu0 = next(c for c in doc["cpus"] if c["cpu"] == 0)["softirq"]["NET_RX"]
    assert sorted(buckets)[-1] == (math.inf, cpu0["count"])
    assert next(s.value for s in samples if s.name.endswith("_count")) == cpu0["count"]
    assert next(s.value for s in samples if s.name.endswith("_sum")) == pytest.approx(cpu0["time_ns"] / 1e9)
    # Grafana's histogram_quantile over these buckets gives histograms.json's percentiles.
    histogram = next(h for h in capture_histograms(doc) if h.name == "softirq_latency_ns" and h.labels["cpu"] == 0)
    for q, ours in zip((0.5, 0.9, 0.99), histogram.percentiles()):
        assert prometheus_quantile(q, buckets) * 1e9 == pytest.approx(ours)
    # Queue delays: le from 64 ns, so the ~600 ns delays are not all in the first bucket, and
    # the kernel's own sum of the delays.
    delay = histogram_series([s for s in families["netprof_softirq_queue_delay_seconds"] if s.labels.get("cpu") == "0"])
    (series,) = delay.values()
    assert series["le=6.4e-08"] == 0 and series["le=5.12e-07"] == 0 and series["le=1.024e-06"] == 12
    assert series["sum"] == pytest.approx((6_000 + 7_400) / 1e9) and series["count"] == 16


def test_write_all_writes_every_format_atomically(doc, tmp_path):
    out = tmp_path / "out"
    written = write_all(doc, out)
    assert [p.name for p in written] == ["capture.json", "stacks.folded", "speedscope.json", "flamegraph.svg",
                                         "histograms.json", "histograms.csv", "metrics.prom"]
    assert sorted(os.listdir(out)) == sorted(p.name for p in written), "no temporary files left"
    assert json.loads((out / "capture.json").read_text()) == doc
    for name in EXPORT_FORMATS:
        path = next(p for p in written if (name == "folded" and p.name == "stacks.folded")
                    or (name == "prometheus" and p.name == "metrics.prom")
                    or p.name == {"speedscope": "speedscope.json", "histograms-json": "histograms.json",
                                  "histograms-csv": "histograms.csv", "flamegraph-svg": "flamegraph.svg"}.get(name))
        assert path.read_text() == render(doc, name)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_write_all_writes_nothing_when_a_format_fails(doc, tmp_path, monkeypatch):
    (tmp_path / "capture.json").write_text("previous\n")

    def broken(doc):
        raise RuntimeError("renderer bug")

    monkeypatch.setattr("profiler.exports.histograms.histograms_csv", broken)
    with pytest.raises(RuntimeError):
        write_all(doc, tmp_path)
    assert os.listdir(tmp_path) == ["capture.json"] and (tmp_path / "capture.json").read_text() == "previous\n"


def test_export_command_converts_a_saved_capture(doc, tmp_path, capsys):
    capture = tmp_path / "capture.json"
    capture.write_text(json.dumps(doc))
    assert main(["export", str(capture), "--format", "folded"]) == 0
    assert capsys.readouterr().out == folded_text(doc)
    target = tmp_path / "deep" / "speedscope.json"
    assert main(["export", str(capture), "-f", "speedscope", "--output", str(target)]) == 1, "makes no folders"
    assert not target.parent.exists()
    capsys.readouterr()
    target.parent.mkdir()
    assert main(["export", str(capture), "-f", "speedscope", "--output", str(target)]) == 0
    assert f"wrote {target}" in capsys.readouterr().err
    speedscope = read_speedscope(target.read_text())
    folded = parse_folded(folded_text(doc))
    assert speedscope["drops: all pods"] == of_kind(folded, "drops")
    assert speedscope["retransmits: all pods"] == of_kind(folded, "retransmits")
    assert main(["export", str(capture), "--format", "prometheus"]) == 0
    assert read_prometheus(capsys.readouterr().out)


def test_export_command_errors_are_one_line(tmp_path, capsys):
    not_capture = tmp_path / "x.json"
    not_capture.write_text('{"hello": 1}')
    assert main(["export", str(not_capture), "--format", "folded"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a netprof capture" in err
    with pytest.raises(SystemExit) as exit_info:
        main(["export", str(not_capture), "--format", "flamegraph"])
    assert exit_info.value.code == 2


def test_stacks_carry_the_pods_latest_label():
    """A netns first seen mid-capture is "netns:<inode>" until a resolver names it; its
    stacks must not stay under the old label when its counters are under the new one."""
    cap = Capture(KERNEL, [])
    cap.add(Snapshot(0.0, 1.0, (PodInterval("netns:14", 14, drops=MappingProxyType({"SOCKET_RCVBUFF": 9})),),
                     stacks=(StackSample("netns:14", 14, "SOCKET_RCVBUFF", UDP_PATH, 9),)))
    cap.add(Snapshot(1.0, 2.0, (PodInterval("default/web-0", 14, rcvqueue_full=1),)))
    doc = cap.to_json()
    assert [p["pod"] for p in doc["pods"]] == ["default/web-0"]
    assert parse_folded(folded_text(doc)) == {("default/web-0", "SOCKET_RCVBUFF", *UDP_PATH): 9}


def test_the_netstat_zeros_are_the_counters_the_listen_source_reads():
    from profiler.exports.prometheus import CONNTRACK_ALWAYS, NETSTAT_ALWAYS
    from profiler.sources.conntrack import COUNTERS as CONNTRACK_COUNTERS
    from profiler.sources.listen import NETSTAT_COUNTERS

    assert NETSTAT_ALWAYS == NETSTAT_COUNTERS
    assert set(CONNTRACK_ALWAYS) <= set(CONNTRACK_COUNTERS)
