"""`netprof diff` on real captures: a steady lab twice is no change; a fault is reported first."""
from __future__ import annotations

import pytest

from profiler.analysis.diff import ALPHA, MIN_RATIO, diff_captures, rate_change_p_value
from profiler.lab.faults import inject_loss
from profiler.lab.scenarios import RetransmitScenario
from profiler.profile import ProfileOptions, run_profile

pytestmark = pytest.mark.usefixtures("bpf_ready", "lab_ready")

RUN_S = 3.0


def capture_run(scenario: RetransmitScenario) -> tuple[dict, dict[str, int]]:
    """One capture of a whole run, and the kernel's own RetransSegs per pod over that run."""
    results = []

    def whole_run() -> None:
        scenario.start(RUN_S)
        results.append(scenario.wait())

    doc = run_profile(ProfileOptions(duration_s=0.5, interval_s=0.5), on_attached=whole_run,
                      log=lambda msg: None).to_json()
    return doc, results[0].retransmits_by_pod


def test_steady_lab_is_no_change_and_a_fault_comes_first():
    with RetransmitScenario(loss_percent=0.0) as scenario:
        steady_a, kernel_a = capture_run(scenario)
        steady_b, kernel_b = capture_run(scenario)
        inject_loss(scenario.lab, "lossy", 5.0, port=scenario.port)
        faulty, kernel_fault = capture_run(scenario)
        # A lab pod is a named netns: its label in the capture is that name.
        labels = {name: pod.netns for name, pod in scenario.lab.pods.items()}
    lab_pods = set(labels.values())
    lossy = labels["lossy"]
    assert next(p for p in faulty["pods"] if p["pod"] == lossy)["retransmits"] > 20, "the fault did not bite"
    # Steady traffic is steady only as far as the kernel says: under emulation (QEMU, one TCG
    # thread) loss-free clients retransmit a few segments (tail loss probes while the other
    # vCPU holds the thread: 7, 6, 2 in one run, 1, 2, 1 in the next), and a diff that reports
    # what the kernel did is right. So a pod's retransmits may change in the diff only where
    # the kernel's own RetransSegs counts of the two runs (equal spans) changed beyond noise by
    # the diff's own rule; everything else about every lab pod must not change.
    def kernel_changed(run_a: dict[str, int], run_b: dict[str, int]) -> set[str]:
        changed = set()
        for name, label in labels.items():
            a, b = run_a.get(name, 0), run_b.get(name, 0)
            p_value, _test = rate_change_p_value(a, RUN_S, b, RUN_S)
            if p_value < ALPHA and max(a, b) >= MIN_RATIO * max(min(a, b), 1):
                changed.add(label)
        return changed

    def unexplained(changes, pods: set[str], changed: set[str]) -> list:
        return [c for c in changes if c.group == "pod" and c.subject in pods
                and not (c.metric == "retransmitted segments" and c.subject in changed)]

    # Two captures of the same steady traffic: none of the lab's pods changed beyond noise.
    steady = diff_captures(steady_a, steady_b)
    assert unexplained(steady.changes, lab_pods, kernel_changed(kernel_a, kernel_b)) == [], (kernel_a, kernel_b)

    # Before and after the loss: the fault's own signal leads, and it is "worse".
    fault = diff_captures(steady_b, faulty)
    assert fault.worse
    first = fault.changes[0]
    signal = {("pod", lossy, "retransmitted segments")} | {
        (group, subject, metric) for group, subject, metric in
        ((c.group, c.subject, c.metric) for c in fault.changes) if "NETFILTER_DROP" in subject + metric}
    assert (first.group, first.subject, first.metric) in signal, fault.changes[:5]
    assert first.direction == "worse"
    lossy_change = next(c for c in fault.changes if (c.subject, c.metric) == (lossy, "retransmitted segments"))
    # Before the loss it retransmitted what the kernel says it did: nothing, but under emulation.
    assert (lossy_change.before_per_s == 0) == (kernel_b.get("lossy", 0) == 0), (lossy_change, kernel_b)
    assert lossy_change.p_value < 1e-6
    steady_pods = {labels["steady1"], labels["steady2"]}
    assert unexplained(fault.changes, steady_pods, kernel_changed(kernel_b, kernel_fault)) == [], (kernel_b, kernel_fault)
