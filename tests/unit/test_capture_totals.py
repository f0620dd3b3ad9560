"""SnapshotTotals, the one place snapshots are added up: its sums are the sums of the
snapshots, with or without pruning, and a pruned pod that comes back starts from zero."""
from __future__ import annotations

import random
from collections import Counter
from types import MappingProxyType

import pytest

from profiler.capture import GONE_NETNS, GONE_POD, SnapshotTotals
from profiler.snapshot import (
    CpuInterval, DropSite, FlowKey, FlowRetransmits, Listener, PodInterval, Snapshot, StackSample,
)


def pod(netns: int, retransmits: int = 0, dropped: int = 0, overflows: int = 0, port: int = 80,
        conntrack_now: int | None = None) -> PodInterval:
    return PodInterval(
        f"pod-{netns}", netns, retransmits=retransmits, retransmitted_segments=2 * retransmits,
        drops=MappingProxyType({"SOCKET_RCVBUFF": dropped} if dropped else {}),
        conntrack=MappingProxyType({"drop": 1, "count_now": conntrack_now} if conntrack_now is not None else {}),
        listeners=(Listener(f"10.0.0.{netns % 250}", port, accept_queue_peak=overflows, overflow_drops=overflows,
                            samples_full=1),) if overflows else (),
    )


def snapshot(step: int, pods=(), cpus=(), sites=(), stacks=(), flows=(), lost=None) -> Snapshot:
    return Snapshot(float(step), step + 1.0, tuple(pods), flows=tuple(flows), cpus=tuple(cpus),
                    drop_sites=tuple(sites), stacks=tuple(stacks), lost=MappingProxyType(lost or {}))


def sums(pods: list[PodInterval]) -> tuple:
    drops: Counter[str] = Counter()
    conntrack: Counter[str] = Counter()
    for p in pods:
        drops.update(p.drops)
        conntrack.update({k: v for k, v in p.conntrack.items() if not k.endswith("_now")})
    return (sum(p.retransmits for p in pods), sum(p.retransmitted_segments for p in pods), dict(drops),
            dict(conntrack), sum(l.overflow_drops for p in pods for l in p.listeners),
            sum(l.samples_full for p in pods for l in p.listeners))


def churn(seed: int, intervals: int = 60) -> list[tuple[Snapshot, dict[int, str]]]:
    """Pods that come and go (netns reused now and then), with events, and the pods present."""
    rng = random.Random(seed)
    alive: set[int] = {1, 0}
    out = []
    for step in range(intervals):
        if rng.random() < 0.3:
            alive.add(rng.randrange(100, 112))
        if rng.random() < 0.3 and len(alive) > 2:
            alive.discard(rng.choice(sorted(alive - {0, 1})))
        pods = [pod(n, rng.randrange(4), rng.randrange(3), rng.randrange(2), port=rng.choice((80, 443)),
                    conntrack_now=rng.randrange(50)) for n in sorted(alive) if rng.random() < 0.6]
        cpus = [CpuInterval(c, drops=MappingProxyType({"CPU_BACKLOG": rng.randrange(1, 3)})) for c in range(2)]
        sites = [DropSite("SOCKET_RCVBUFF", f"site{rng.randrange(3)}", 1)]
        stacks = [StackSample(p.pod, p.netns, "TCP_RETRANSMIT", ("a", "b"), p.retransmits) for p in pods if p.retransmits]
        present = {n: f"pod-{n}" for n in alive if n != 0}
        out.append((snapshot(step, pods, cpus, sites, stacks, lost={"m": 1}), present))
    return out


@pytest.mark.parametrize("prune_after", [None, 1, 3])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_totals_are_the_sum_of_the_snapshots_whatever_is_pruned(seed, prune_after):
    intervals = churn(seed)
    totals = SnapshotTotals(prune_after=prune_after)
    for snap, present in intervals:
        totals.add(snap, present)
    added = [p for snap, _ in intervals for p in snap.pods]
    assert sums(totals.pods()) == sums(added)
    assert sum(s.count for s in totals.stacks()) == sum(s.count for snap, _ in intervals for s in snap.stacks)
    assert {c.cpu: dict(c.drops) for c in totals.cpus()} == {
        c: {"CPU_BACKLOG": sum(cpu.drops["CPU_BACKLOG"] for snap, _ in intervals for cpu in snap.cpus if cpu.cpu == c)}
        for c in range(2)}
    assert sum(s.count for s in totals.drop_sites()) == len(intervals)
    assert totals.lost() == {"m": len(intervals)} and totals.intervals == len(intervals)
    netns = [p.netns for p in totals.pods()]
    assert len(netns) == len(set(netns)), "one entry per netns"
    if prune_after is None:
        assert GONE_NETNS not in netns
    else:
        assert GONE_NETNS in netns, "this churn has pods gone long enough to be pruned"
        gone = totals.pods()[-1]
        assert gone.pod == GONE_POD and "count_now" not in gone.conntrack, "a gone pod has no level"
        assert all(l.address == "*" for l in gone.listeners) and len(gone.listeners) <= 2, "by port only"


def test_pruning_keeps_the_counts_and_a_pod_returning_starts_from_zero():
    totals = SnapshotTotals(prune_after=2)
    totals.add(snapshot(0, [pod(7, retransmits=5, overflows=3)]), {7: "pod-7", 1: "host"})
    for step in (1, 2):
        assert totals.add(snapshot(step), {1: "host"}) == set()
    assert [p.netns for p in totals.pods()] == [1, 7], "gone for two intervals: still its own entry"
    assert totals.add(snapshot(3), {1: "host"}) == {7}
    host, gone = totals.pods()
    assert (host.netns, host.retransmits) == (1, 0)
    assert (gone.pod, gone.netns, gone.retransmits, gone.listeners[0].overflow_drops) == (GONE_POD, GONE_NETNS, 5, 3)
    # The same netns back (a pod restarted in it): a new entry from zero, the old counts stay gone.
    totals.add(snapshot(4, [pod(7, retransmits=1)]), {7: "pod-7", 1: "host"})
    by_netns = {p.netns: p for p in totals.pods()}
    assert by_netns[7].retransmits == 1 and by_netns[7].listeners == ()
    assert by_netns[GONE_NETNS].retransmits == 5
    # Pruned again: it joins the same entry.
    for step in range(5, 8):
        totals.add(snapshot(step), {1: "host"})
    assert {p.netns: p.retransmits for p in totals.pods()} == {1: 0, GONE_NETNS: 6}


def test_a_reused_inode_under_a_new_name_starts_from_zero_at_once():
    totals = SnapshotTotals(prune_after=100)
    totals.add(snapshot(0, [pod(7, retransmits=5)]), {7: "lab1-server"})
    totals.add(snapshot(1), {})
    totals.add(snapshot(2), {7: "lab2-sender"})
    assert [(p.pod, p.retransmits) for p in totals.pods()] == [("lab2-sender", 0), (GONE_POD, 5)]


def test_netns_0_is_never_pruned():
    totals = SnapshotTotals(prune_after=1)
    unknown = PodInterval("unknown", 0, drops=MappingProxyType({"NO_SOCKET": 4}))
    totals.add(snapshot(0, [unknown]), {1: "host"})
    for step in range(1, 5):
        totals.add(snapshot(step), {1: "host"})
    assert [(p.netns, p.pod, dict(p.drops)) for p in totals.pods()] == [
        (0, "unknown", {"NO_SOCKET": 4}), (1, "host", {})]


def test_flows_and_stacks_of_a_pruned_pod_are_kept_under_the_gone_entry():
    flow = FlowKey(netns=7, family=2, saddr="10.0.0.7", sport=4000, daddr="10.0.0.1", dport=80)
    totals = SnapshotTotals(prune_after=1)
    totals.add(snapshot(0, [pod(7, retransmits=2)], flows=[FlowRetransmits("pod-7", flow, "ESTABLISHED", 2, 4)],
                        stacks=[StackSample("pod-7", 7, "TCP_RETRANSMIT", ("f",), 2)]), {7: "pod-7"})
    totals.add(snapshot(1), {})
    totals.add(snapshot(2), {})
    (row,) = totals.flows()
    assert (row.pod, row.flow.netns, row.retransmits, row.segments) == (GONE_POD, GONE_NETNS, 2, 4)
    (stack,) = totals.stacks()
    assert (stack.pod, stack.netns, stack.count) == (GONE_POD, GONE_NETNS, 2)


def test_without_detail_no_per_flow_or_stack_rows_are_kept():
    flow = FlowKey(netns=7, family=2, saddr="10.0.0.7", sport=4000, daddr="10.0.0.1", dport=80)
    totals = SnapshotTotals(detail=False)
    totals.add(snapshot(0, [pod(7, retransmits=2)], flows=[FlowRetransmits("pod-7", flow, "ESTABLISHED", 2, 4)],
                        stacks=[StackSample("pod-7", 7, "TCP_RETRANSMIT", ("f",), 2)]))
    assert totals.flows() == [] and totals.stacks() == []
    assert [p.retransmits for p in totals.pods()] == [2]


def test_known_pods_are_zeros_and_an_intervals_label_beats_the_known_one():
    totals = SnapshotTotals()
    totals.add(snapshot(0, [PodInterval("default/web-0", 7, retransmits=1)]))
    totals.know({7: "netns:7", 8: "quiet"})
    assert [(p.netns, p.pod, p.retransmits) for p in totals.pods()] == [(7, "default/web-0", 1), (8, "quiet", 0)]


def test_the_profile_json_adds_the_snapshots_up_once_per_state(monkeypatch):
    """Analysis reads capture.document(); saving the capture afterwards reuses the sections it
    was built from (no second pass over the snapshots), and still carries the findings."""
    from profiler.capture import Capture
    from profiler.document import ProfileDocument
    from profiler.findings import Finding
    from profiler.k8s.base import PodIdentity
    from tests.unit.test_capture import KERNEL

    passes = []
    real = Capture.pod_totals
    monkeypatch.setattr(Capture, "pod_totals", lambda self: passes.append(1) or real(self))
    capture = Capture(KERNEL, [], known_pods={7: "web"})
    capture.add(snapshot(0, [pod(7, retransmits=3)]))
    document = capture.document()
    assert isinstance(document, ProfileDocument) and document.pod(7).raw["retransmits"] == 3
    capture.findings = [Finding("tcp-retransmits", "warning", "3 retransmits", {}, pod="web")]
    capture.interrupted = True
    doc = capture.to_json()
    assert len(passes) == 1
    assert [f["summary"] for f in doc["findings"]] == ["3 retransmits"] and doc["interrupted"] is True
    # A new interval, or a pod's identity learned since, is a new state: added up again.
    capture.add(snapshot(1, [pod(7, retransmits=1)]))
    assert [p["retransmits"] for p in capture.to_json()["pods"]] == [4] and len(passes) == 2
    capture.pod_identities[7] = PodIdentity("shop", "web-0", "uid", ("app",), "containerd")
    assert capture.to_json()["pods"][0]["kubernetes"]["name"] == "web-0" and len(passes) == 3


def test_a_live_capture_is_analysed_on_its_document_and_added_up_once(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from profiler.capture import Capture
    from profiler.document import ProfileDocument
    from profiler.live import LiveSession

    class Pods:
        def known(self):
            return {7: "web"}

        def netns_paths(self):
            return {}

        def identity(self, inode):
            return None

    analysed = []
    monkeypatch.setattr("profiler.live.collect_node_context", lambda paths, root: SimpleNamespace(
        topology=None, irqbalance_running=False, to_json=lambda: None))
    monkeypatch.setattr("profiler.live.analyze", lambda document, ctx: analysed.append(document) or [])
    passes = []
    real = Capture.pod_totals
    monkeypatch.setattr(Capture, "pod_totals", lambda self: passes.append(1) or real(self))
    session = LiveSession(root=tmp_path, measure_cost=False)
    session.pods = Pods()
    session._snapshots.append(snapshot(0, [pod(7, retransmits=3)]))
    doc = session.capture().to_json()
    (document,) = analysed
    assert isinstance(document, ProfileDocument) and document.pod(7).raw["retransmits"] == 3
    assert doc["pods"][0]["retransmits"] == 3 and len(passes) == 1
