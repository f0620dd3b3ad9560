"""Totals of intervals: every section merges the way its meaning requires."""
from types import MappingProxyType

from profiler.capture import merge_cpus, merge_pods
from profiler.snapshot import CpuInterval, Listener, NapiDevice, PodInterval, SnapshotFrame, SoftirqVector

import pytest


def test_pod_counters_sum_and_listeners_keep_peaks():
    a = PodInterval("web", 7, retransmits=2, drops=MappingProxyType({"SOCKET_RCVBUFF": 3}),
                    listeners=(Listener("0.0.0.0", 80, accept_queue_peak=5, accept_queue_limit=8, samples_full=0),))
    b = PodInterval("web", 7, retransmits=1, drops=MappingProxyType({"SOCKET_RCVBUFF": 1, "CPU_BACKLOG": 4}),
                    listeners=(Listener("0.0.0.0", 80, accept_queue_peak=8, accept_queue_limit=8,
                                        overflow_drops=6, samples_full=2, requested_backlog=8),
                               Listener("0.0.0.0", 443, accept_queue_peak=1, accept_queue_limit=128)))
    total = merge_pods(a, b)
    assert total.retransmits == 3
    assert dict(total.drops) == {"SOCKET_RCVBUFF": 4, "CPU_BACKLOG": 4}
    by_port = {l.port: l for l in total.listeners}
    assert by_port[80].accept_queue_peak == 8 and by_port[80].overflow_drops == 6
    assert by_port[80].samples_full == 2 and by_port[80].requested_backlog == 8
    assert by_port[443].accept_queue_limit == 128


def test_levels_take_the_latest_value_counters_sum():
    a = PodInterval("web", 7, conntrack=MappingProxyType({"drop": 3, "count_now": 64, "max_now": 64}))
    b = PodInterval("web", 7, conntrack=MappingProxyType({"drop": 2, "count_now": 60, "max_now": 64}))
    c = PodInterval("web", 7, conntrack=MappingProxyType({"drop": 1, "count_now": 12, "max_now": 262144}))
    total = merge_pods(merge_pods(a, b), c)
    assert dict(total.conntrack) == {"drop": 6, "count_now": 12, "max_now": 262144}


def test_cpu_sections_merge_histograms_and_devices():
    a = CpuInterval(0, softirq=MappingProxyType({"NET_RX": SoftirqVector(2, 100, (1, 1), (2,))}),
                    napi=(NapiDevice("eth0", 3, 30, 1),), softnet=MappingProxyType({"processed": 5}))
    b = CpuInterval(0, softirq=MappingProxyType({"NET_RX": SoftirqVector(1, 50, (0, 0, 1), ()),
                                                 "NET_TX": SoftirqVector(1, 7, (1,), ())}),
                    napi=(NapiDevice("eth0", 1, 64, 1), NapiDevice("(no_device)", 2, 2, 0)),
                    softnet=MappingProxyType({"processed": 1, "dropped": 2}))
    total = merge_cpus(a, b)
    assert total.softirq["NET_RX"] == SoftirqVector(3, 150, (1, 1, 1), (2,))
    assert total.softirq["NET_TX"].count == 1
    assert {d.device: d.packets for d in total.napi} == {"eth0": 94, "(no_device)": 2}
    assert dict(total.softnet) == {"processed": 6, "dropped": 2}


def test_frame_refuses_two_sources_writing_one_field():
    frame = SnapshotFrame(0.0, lambda inode: f"netns:{inode}")
    frame.pod(5, retransmits=1)
    frame.pod(5, drops={"X": 1})
    with pytest.raises(ValueError, match="set twice"):
        frame.pod(5, retransmits=2)
    snapshot = frame.freeze(1.0)
    assert snapshot.pods[0].pod == "netns:5" and snapshot.pods[0].retransmits == 1
