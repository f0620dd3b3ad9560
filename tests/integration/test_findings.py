"""Issue 4's contract on the real kernel: for each lab scenario, the real profiler's top finding
has the expected kind and names the right pod or CPU; a healthy lab has no critical finding."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import pytest

from profiler.capture import Capture
from profiler.lab.scenario_conntrack import ConntrackFullScenario, ConntrackRaceScenario
from profiler.lab.scenario_cpu import NetRxOneCpuScenario
from profiler.lab.scenario_drops import CpuBacklogScenario, RcvbufDropScenario
from profiler.lab.scenario_listen import ListenOverflowScenario, ListenSomaxconnScenario
from profiler.lab.scenarios import RetransmitScenario, Scenario, lab_time_scale
from profiler.lab.topology import Lab
from profiler.profile import ProfileOptions, run_profile

pytestmark = pytest.mark.usefixtures("bpf_ready", "lab_ready")


@dataclass(frozen=True)
class Case:
    make: Callable[[], Scenario]
    kind: str
    duration_s: float = 2.0


CASES = {
    "retransmits": Case(RetransmitScenario, "tcp-retransmits", 3.0),
    "rcvbuf": Case(RcvbufDropScenario, "socket-rcvbuf-drops"),
    # Paced bursts (as test_fix_verify): a flat-out blast from the sender's CPU sometimes
    # overflows that CPU's own backlog first, on the first veth hop into the node's netns, and
    # the node, rightly, is then the pod with the most backlog drops (1 run in 6 here).
    "cpu-backlog": Case(lambda: CpuBacklogScenario(max_backlog=2, rate=10000, burst=100), "cpu-backlog-drops"),
    # A CPU's share of the capture, not a count: in a guest under software emulation the
    # lab's setup takes ten times as long while the blast still lasts its wall-clock seconds,
    # and one TCG thread gives the target CPU at most half of them (trixie: 1.0 s of NET_RX
    # in a 13 s capture, 7% < the 10% a finding needs). There the blast runs longer.
    "net-rx-one-cpu": Case(NetRxOneCpuScenario, "softirq-imbalance", 3.0 * min(lab_time_scale(), 5.0)),
    "conntrack-full": Case(ConntrackFullScenario, "conntrack-table-full"),
    "conntrack-race": Case(ConntrackRaceScenario, "conntrack-insert-failed"),
    "listen-overflow": Case(ListenOverflowScenario, "listen-overflow"),
    "listen-somaxconn": Case(ListenSomaxconnScenario, "listen-overflow"),
}


def capture_scenario(scenario: Scenario, duration_s: float) -> tuple[Capture, dict[str, str]]:
    with scenario:
        def whole_run() -> None:
            scenario.start(duration_s)
            scenario.wait()

        capture = run_profile(ProfileOptions(duration_s=0.5, interval_s=0.5), on_attached=whole_run,
                              log=lambda msg: None)
        labels = {name: pod.netns for name, pod in scenario.lab.pods.items()}
    return capture, labels


# conntrack's insert race needs two CPUs running at once.
NEEDS_PARALLEL_CPUS = {"conntrack-race"}


@pytest.mark.parametrize("name", [pytest.param(name, marks=pytest.mark.parallel_cpus) if name in NEEDS_PARALLEL_CPUS
                                  else name for name in sorted(CASES)])
def test_top_finding_names_the_trouble(name):
    case = CASES[name]
    scenario = case.make()
    missing = getattr(scenario, "missing", None)
    if callable(missing) and missing():
        pytest.skip(missing())
    capture, labels = capture_scenario(scenario, case.duration_s)
    findings = capture.findings
    summary = [(f.severity, f.kind, f.pod, f.cpu) for f in findings]
    assert findings, f"no finding for {name}"
    top = findings[0]
    assert top.kind == case.kind, summary
    if scenario.expected_pod is not None:
        assert top.pod == labels[scenario.expected_pod], summary
    else:
        assert top.cpu == scenario.expected_cpu, summary
    assert top.evidence and top.fixes, top
    # The JSON carries the same findings, first one first.
    doc = capture.to_json()
    assert doc["findings"][0]["kind"] == case.kind


def test_healthy_lab_has_no_critical_finding():
    """Pods talking without faults: nothing critical may be reported."""
    with Lab.up(["a", "b"]) as lab:
        from profiler.lab import traffic

        def talk() -> None:
            server = lab.popen("b", traffic.server_argv(5300, 10))
            try:
                client = lab.run("a", traffic.client_argv(lab.pods["b"].ip, 5300, 200, 500, 1.5), check=False)
                assert client.returncode == 0, client.stderr
            finally:
                server.terminate()
                server.wait(5)

        capture = run_profile(ProfileOptions(duration_s=0.5, interval_s=0.5), on_attached=talk,
                              log=lambda msg: None)
    critical = [(f.kind, f.pod, f.summary) for f in capture.findings if f.severity == "critical"]
    assert critical == []


def test_retransmit_finding_points_at_the_drop_on_the_flows_path():
    """The lossy pod's packets are dropped by an nft rule on the lab's bridge, in the node's
    netns: the finding names that drop (reason, site, where) as the cause, from the dropped
    packets' own 4-tuples, and its first fix is about that rule."""
    with RetransmitScenario() as scenario:
        node = scenario.lab.node_netns   # the bridge's netns, named like a pod

        def whole_run() -> None:
            scenario.start(3.0)
            scenario.wait()

        capture = run_profile(ProfileOptions(duration_s=0.5, interval_s=0.5), on_attached=whole_run,
                              log=lambda msg: None)
        labels = {name: pod.netns for name, pod in scenario.lab.pods.items()}
    doc = capture.to_json()
    finding = next(f for f in capture.findings if f.kind == "tcp-retransmits")
    assert finding.pod == labels["lossy"]
    lossy_ip = next(row["saddr"] for row in doc["flows"] if row["pod"] == labels["lossy"])
    path_drops = [row for row in doc["flow_drops"]
                  if row["saddr"] == lossy_ip and row["reason"] == "NETFILTER_DROP"]
    # nft_do_chain, "[nf_tables]nft_do_chain" where nf_tables is a module (6.1's Debian build).
    site = path_drops[0]["symbol"].split("+")[0] if path_drops else ""
    assert site.rpartition("]")[2] == "nft_do_chain", path_drops
    assert all(row["symbol"].startswith(site) for row in path_drops)
    where = path_drops[0]["pod"]
    assert where == node
    # Every dropped packet the nft rule counted is one of the lossy flow's, and it explains
    # most of its retransmits (each lost segment is retransmitted at least once).
    dropped = sum(row["count"] for row in path_drops)
    lossy = next(p for p in doc["pods"] if p["pod"] == labels["lossy"])
    assert 0.5 * lossy["retransmits"] <= dropped <= 1.5 * lossy["retransmitted_segments"]
    assert f"NETFILTER_DROP at {site}" in finding.summary and where in finding.summary
    assert finding.fixes[0].title == f"find the netfilter rule in {where} that drops this pod's traffic"
    assert any(line.startswith(f"NETFILTER_DROP at {site}") for line in finding.evidence["drops_on_path"])
