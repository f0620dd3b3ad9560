"""The foundation end to end on the real kernel: BPF → map → Python → pod → capture."""
from __future__ import annotations

import pytest

from dataclasses import dataclass

from profiler.capture import Capture
from profiler.lab.scenarios import RetransmitScenario, ScenarioResult
from profiler.profile import ProfileOptions, run_profile

pytestmark = pytest.mark.usefixtures("bpf_ready", "lab_ready")


@dataclass(frozen=True)
class PodFacts:
    netns: str
    inode: int  # os.stat(/run/netns/<netns>).st_ino, taken while the pod existed
    ip: str


@dataclass(frozen=True)
class LossyRun:
    capture: Capture
    result: ScenarioResult
    pods: dict[str, PodFacts]


@pytest.fixture(scope="module")
def lossy_run() -> LossyRun:
    """One capture of the retransmit scenario, shared by the assertions below."""
    from tests.conftest import missing_for_bpf, missing_for_lab, skip_or_fail

    reason = missing_for_bpf() or missing_for_lab()
    if reason:
        skip_or_fail(reason)
    with RetransmitScenario() as scenario:
        results = []

        def whole_scenario() -> None:
            # The kernel's own counters are read at start() and after wait()'s drain; running
            # the scenario inside the capture makes the capture's window cover theirs.
            scenario.start(3.0)
            results.append(scenario.wait())

        capture = run_profile(ProfileOptions(duration_s=0.5, interval_s=0.5),
                              on_attached=whole_scenario, log=lambda msg: None)
        result = results[0]
        pods = {name: PodFacts(pod.netns, pod.netns_inode, pod.ip) for name, pod in scenario.lab.pods.items()}
    return LossyRun(capture, result, pods)


def test_lossy_pod_retransmits_and_neighbours_do_not(lossy_run):
    capture, result, pods = lossy_run.capture, lossy_run.result, lossy_run.pods
    by_inode = {p.netns: p.retransmits for p in capture.pod_totals()}
    lossy = by_inode.get(pods["lossy"].inode, 0)
    # 3 s at 1000 writes/s with 5% loss: design.md §8 measured 104-130 at this rate.
    assert lossy >= 30, f"lossy pod saw only {lossy} retransmits; kernel says {result.retransmits_by_pod}"
    # A loss-free pod may retransmit a few of its own (tail loss probes: a 5.10 guest under
    # emulation counted 5 for one against the lossy pod's 40): it is allowed what its own
    # netns' kernel counter says, never the lossy pod's.
    for name in ("server", "steady1", "steady2"):
        allowed = max(lossy // 10, result.retransmits_by_pod.get(name, 0))
        assert by_inode.get(pods[name].inode, 0) <= allowed, (name, by_inode, result.retransmits_by_pod)


def test_segments_agree_with_the_pods_own_kernel_counter(lossy_run):
    capture, result, pods = lossy_run.capture, lossy_run.result, lossy_run.pods
    totals = {p.netns: p for p in capture.pod_totals()}
    kernel = result.retransmits_by_pod["lossy"]  # the pod netns' own Tcp RetransSegs delta
    ours = totals[pods["lossy"].inode]
    # Each retransmitted skb carries ≥ 1 segment; the segments read from skb->cb at the BTF
    # offset must add up to what the kernel's own SNMP counter says for that namespace.
    assert 0 < ours.retransmits <= ours.retransmitted_segments
    assert kernel > 0 and abs(ours.retransmitted_segments - kernel) <= max(2, kernel // 50), (
        ours.retransmitted_segments, kernel)


def test_netns_inode_read_in_bpf_is_the_pods_netns(lossy_run):
    """The BTF offsets are right: the inode the BPF program read from skaddr → skc_net →
    ns.inum is exactly the inode of /run/netns/<name>."""
    capture, pods = lossy_run.capture, lossy_run.pods
    netns_name, inode_from_stat = pods["lossy"].netns, pods["lossy"].inode
    # Only inodes the BPF program produced carry retransmits.
    from_bpf = {p.netns: p.pod for p in capture.pod_totals() if p.retransmits}
    assert inode_from_stat in from_bpf, (inode_from_stat, from_bpf)
    assert from_bpf[inode_from_stat] == netns_name
    flows = [f for f in capture.flow_totals() if f.flow.netns == inode_from_stat]
    assert flows and all(f.pod == netns_name for f in flows)
    # The data flows from the lossy client to the server: addresses decoded from the map.
    assert any(f.flow.saddr == pods["lossy"].ip and f.flow.daddr == pods["server"].ip and f.flow.dport == 5201
               for f in flows), [f.flow for f in flows]


def test_capture_lists_quiet_pods_by_name(lossy_run):
    capture, pods = lossy_run.capture, lossy_run.pods
    known = {p.netns: p.pod for p in capture.pod_totals()}
    for pod in pods.values():
        assert known.get(pod.inode) == pod.netns
