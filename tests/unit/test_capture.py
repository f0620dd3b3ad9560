"""The profile JSON and the report, from synthetic snapshots (no kernel needed)."""
from __future__ import annotations

import json
from importlib import resources

import jsonschema
from rich.console import Console

from profiler.capture import Capture
from profiler.kernel.features import KernelInfo
from profiler.probes.base import ProbeStatus
from profiler.report import print_report
from profiler.snapshot import FlowKey, FlowRetransmits, PodInterval, Snapshot

KERNEL = KernelInfo("6.18.44", btf=True, kprobes=False, tracefs="/sys/kernel/tracing", headers=None)


def schema() -> dict:
    return json.loads((resources.files("profiler") / "schemas/profile-v1.json").read_text())


def sample_capture() -> Capture:
    flow = FlowKey(netns=11, family=2, saddr="198.18.0.3", sport=40000, daddr="198.18.0.2", dport=5201)
    cap = Capture(KERNEL, [ProbeStatus("tcp_retransmits", True, "tracepoint:tcp:tcp_retransmit_skb")],
                  known_pods={11: "lossy", 12: "steady", 1: "host"})
    cap.add(Snapshot(0.0, 1.0, (PodInterval("lossy", 11, 30, 50),), (FlowRetransmits("lossy", flow, "ESTABLISHED", 30, 50),)))
    cap.add(Snapshot(1.0, 2.0, (PodInterval("lossy", 11, 12, 20),),
                     (FlowRetransmits("lossy", flow, "ESTABLISHED", 11, 19), FlowRetransmits("lossy", flow, "SYN_SENT", 1, 1)),
                     lost={"retransmits_by_netns": 2}))
    return cap


def test_totals_and_quiet_pods():
    doc = sample_capture().to_json()
    jsonschema.validate(doc, schema())
    assert doc["duration_s"] == 2.0
    assert doc["pods"][0] == {
        "pod": "lossy", "netns": 11, "retransmits": 42, "retransmitted_segments": 70, "drops": {},
        "rcvqueue_full": 0, "listen": [], "conntrack": {}, "netstat": {},
    }
    assert {p["pod"]: p["retransmits"] for p in doc["pods"]} == {"lossy": 42, "steady": 0, "host": 0}
    assert doc["flows"] == [{
        "pod": "lossy", "netns": 11, "family": "ipv4", "saddr": "198.18.0.3", "sport": 40000,
        "daddr": "198.18.0.2", "dport": 5201, "retransmits": 42, "retransmitted_segments": 70, "states": {"ESTABLISHED": 41, "SYN_SENT": 1},
    }]
    assert doc["lost_events"] == {"retransmits_by_netns": 2}


def test_pods_a_kubernetes_resolver_knows_carry_their_identity():
    from profiler.netns_names import PodIdentity

    cap = sample_capture()
    cap.pod_identities[11] = PodIdentity("shop", "lossy-6d8f7c9b5-x2x4q", "0c8f2a8e-3d7e-4a53-9c1f-2b1c7c1f3d11",
                                         ("app", "istio-proxy"), "containerd")
    doc = cap.to_json()
    jsonschema.validate(doc, schema())
    pods = {p["netns"]: p for p in doc["pods"]}
    assert pods[11]["kubernetes"] == {
        "namespace": "shop", "name": "lossy-6d8f7c9b5-x2x4q", "uid": "0c8f2a8e-3d7e-4a53-9c1f-2b1c7c1f3d11",
        "containers": ["app", "istio-proxy"], "source": "containerd",
    }
    assert "kubernetes" not in pods[12] and "kubernetes" not in pods[1]  # named netns and host: no pod
    pods[11]["kubernetes"]["extra"] = "x"
    try:
        jsonschema.validate(doc, schema())
    except jsonschema.ValidationError:
        return
    raise AssertionError("an unknown kubernetes field passed the schema")


def test_schema_rejects_what_it_should():
    doc = sample_capture().to_json()
    doc["pods"][0]["retransmits"] = -1
    try:
        jsonschema.validate(doc, schema())
    except jsonschema.ValidationError:
        return
    raise AssertionError("a negative count passed the schema")


def test_report_names_the_pod_and_flow():
    console = Console(record=True, width=120, color_system=None)
    print_report(sample_capture().to_json(), console)
    text = console.export_text()
    assert "lossy" in text and "42" in text and "198.18.0.3:40000" in text
    assert "retransmits_by_netns 2" in text


def test_empty_capture_report():
    console = Console(record=True, width=100, color_system=None)
    cap = Capture(KERNEL, [ProbeStatus("tcp_retransmits", False, "tracepoint:tcp:tcp_retransmit_skb", "boom")])
    print_report(cap.to_json(), console)
    text = console.export_text()
    assert "not attached: tcp_retransmits (tracepoint:tcp:tcp_retransmit_skb): boom" in text
    assert "(no pods seen)" in text and "probes attached (0/1): none" in text
    assert "Top flows" not in text  # sections without data are left out


def test_the_directorys_label_at_assembly_beats_the_one_an_interval_carried():
    """A pod created mid-capture whose only traffic came in the interval before its runtime
    record was read is labelled by its CNI netns name there; the directory named it by the
    time the capture was assembled, and every total must carry that name (seen with a real
    containerd: tests/k8s). A netns the directory never named keeps its interval label."""
    flow = FlowKey(netns=21, family=2, saddr="198.18.77.5", sport=40000, daddr="198.18.77.1", dport=53)
    cap = Capture(KERNEL, [ProbeStatus("tcp_retransmits", True, "tracepoint:tcp:tcp_retransmit_skb")],
                  known_pods={21: "netprof-a/late"})
    cap.add(Snapshot(0.0, 1.0, (PodInterval("cni-500164be", 21, 3, 3), PodInterval("netns:22", 22, 1, 1)),
                     (FlowRetransmits("cni-500164be", flow, "ESTABLISHED", 3, 3),)))
    doc = cap.to_json()
    assert {p["netns"]: p["pod"] for p in doc["pods"]} == {21: "netprof-a/late", 22: "netns:22"}
    assert [f["pod"] for f in doc["flows"]] == ["netprof-a/late"]


def test_a_pod_first_read_before_its_containers_gets_them_later(tmp_path):
    """Read between RunPodSandbox and CreateContainer, a pod has no containers; the session
    must not keep that first reading for the whole capture (seen with a real containerd)."""
    from profiler.netns_names import PodIdentity
    from profiler.live import LiveSession

    class Directory:
        def __init__(self):
            self.now = PodIdentity("netprof-a", "late", "", (), "containerd")

        def identity(self, inode):
            return self.now if inode == 21 else None

    session = LiveSession(root=tmp_path, measure_cost=False)
    session.pods = Directory()
    session._remember_identities([21])
    session.pods.now = PodIdentity("netprof-a", "late", "", ("app",), "containerd")
    session._remember_identities([21])
    assert session._known_identities()[21].containers == ("app",)
    # Once complete, a vanished pod keeps what was read of it.
    session.pods.now = None
    session._remember_identities([21], refresh=True)
    assert session._known_identities()[21].containers == ("app",)
