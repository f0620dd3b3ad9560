"""Detectors on synthetic profile documents: each kind fires on its evidence, with the right
severity, target and fixes, and stays silent on a healthy capture."""
from __future__ import annotations

import copy

import pytest

from profiler.analysis.detectors import AnalysisContext, analyze

BASE = {
    "schema": "netprof.profile/v1", "duration_s": 10.0,
    "node": {"sysctls": {"net.core.netdev_max_backlog": "1000", "net.core.netdev_budget": "300",
                         "net.core.netdev_budget_usecs": "8000", "net.core.rmem_max": "212992",
                         "net.netfilter.nf_conntrack_max": "64", "net.netfilter.nf_conntrack_buckets": "1024"},
             "pod_sysctls": {"11": {"net.core.somaxconn": "4096", "net.ipv4.tcp_max_syn_backlog": "512",
                                    "net.ipv4.tcp_syncookies": "1"}},
             "nics": [{"name": "eth0", "queues": [{"kind": "rx", "index": 0, "irq": 38, "affinity": "0-1",
                                                    "effective_affinity": "0"}]}]},
    "pods": [{"pod": "web", "netns": 11, "retransmits": 0, "retransmitted_segments": 0, "drops": {},
              "rcvqueue_full": 0, "listen": [], "conntrack": {}, "netstat": {}},
             {"pod": "quiet", "netns": 12, "retransmits": 0, "retransmitted_segments": 0, "drops": {},
              "rcvqueue_full": 0, "listen": [], "conntrack": {}, "netstat": {}}],
    "flows": [], "cpus": [{"cpu": 0, "softirq": {}, "napi": [], "softnet": {}, "drops": {}},
                          {"cpu": 1, "softirq": {}, "napi": [], "softnet": {}, "drops": {}}],
    "findings": [],
}
CTX = AnalysisContext(netns_paths={11: "/run/netns/web"})


def doc_with(**web) -> dict:
    doc = copy.deepcopy(BASE)
    doc["pods"][0].update(web)
    return doc


def kinds(findings) -> list[str]:
    return [f.kind for f in findings]


def test_healthy_capture_has_no_findings():
    assert analyze(copy.deepcopy(BASE), CTX) == []


def test_listen_overflow_where_somaxconn_bites():
    listener = {"address": "0.0.0.0", "port": 8080, "accept_queue_peak": 128, "accept_queue_limit": 128,
                "requested_backlog": 1024, "somaxconn": 128, "overflow_drops": 40, "samples_full": 9}
    findings = analyze(doc_with(netstat={"TcpExt.ListenOverflows": 60}, listen=[listener]), CTX)
    top = findings[0]
    assert top.kind == "listen-overflow" and top.pod == "web" and top.severity == "critical"
    assert top.evidence["limit_that_bites"] == "somaxconn" and top.evidence["listener"] == "0.0.0.0:8080"
    scopes = [fix.scope for fix in top.fixes]
    assert scopes == ["pod", "node", "app"]
    pod_fix, runtime_fix, app_fix = top.fixes
    assert "net.core.somaxconn" in pod_fix.snippet and 'value: "256"' in pod_fix.snippet
    assert "--allowed-unsafe-sysctls=net.core.somaxconn" in pod_fix.rationale
    change = runtime_fix.changes[0]
    assert (change.key, change.value, change.netns, change.expected_current) == (
        "net.core.somaxconn", "256", "/run/netns/web", "128")
    assert "listen(fd, 256)" in app_fix.snippet


def test_listen_overflow_where_the_application_backlog_bites():
    listener = {"address": "0.0.0.0", "port": 8080, "accept_queue_peak": 8, "accept_queue_limit": 8,
                "requested_backlog": 8, "somaxconn": 4096, "overflow_drops": 0, "samples_full": 4}
    top = analyze(doc_with(netstat={"TcpExt.ListenOverflows": 5}, listen=[listener]), CTX)[0]
    assert top.evidence["limit_that_bites"] == "backlog" and top.severity == "warning"
    assert [fix.scope for fix in top.fixes] == ["app"]  # somaxconn 4096 is already enough for 16
    assert "listen(fd, 16)" in top.fixes[0].snippet


def test_syn_backlog_overflow():
    top = analyze(doc_with(netstat={"TcpExt.TCPReqQFullDrop": 30}), CTX)[0]
    assert top.kind == "syn-backlog-overflow" and top.severity == "critical"
    assert top.fixes[0].snippet and "tcp_max_syn_backlog" in top.fixes[0].snippet


def test_softirq_imbalance_names_the_cpu_and_its_queue():
    doc = copy.deepcopy(BASE)
    doc["cpus"][0]["softirq"] = {"NET_RX": {"count": 9, "time_ns": 6_000_000_000}}
    doc["cpus"][1]["softirq"] = {"NET_RX": {"count": 9, "time_ns": 100_000_000}}
    top = analyze(doc, CTX)[0]
    assert top.kind == "softirq-imbalance" and top.cpu == 0 and top.severity == "critical"
    assert top.evidence["nic_queue_irqs_on_cpu"] == ["eth0 rx-0 (IRQ 38)"]


def test_every_queue_on_one_cpu_and_the_others_idle_is_an_imbalance():
    """The worst imbalance: the capture lists only the CPU that did network work. The other
    online CPUs (node.cpus_online) are in the comparison at 0 (issue 19: "No findings")."""
    doc = copy.deepcopy(BASE)
    doc["node"]["cpus_online"] = "0-3"
    doc["cpus"] = [{"cpu": 0, "softirq": {"NET_RX": {"count": 9, "time_ns": 6_000_000_000}},
                    "napi": [], "softnet": {}, "drops": {}}]
    top = analyze(doc, CTX)[0]
    assert top.kind == "softirq-imbalance" and top.cpu == 0
    assert top.evidence["net_softirq_share_by_cpu"] == {"0": 0.6, "1": 0.0, "2": 0.0, "3": 0.0}
    assert top.evidence["mean_share_of_others"] == 0.0


def test_mild_skew_is_not_an_imbalance():
    doc = copy.deepcopy(BASE)
    doc["cpus"][0]["softirq"] = {"NET_RX": {"count": 9, "time_ns": 300_000_000}}
    doc["cpus"][1]["softirq"] = {"NET_RX": {"count": 9, "time_ns": 200_000_000}}
    assert analyze(doc, CTX) == []


def test_napi_budget_exhausted_doubles_the_budget():
    doc = copy.deepcopy(BASE)
    doc["cpus"][1]["napi"] = [{"device": "eth0", "polls": 1000, "packets": 64000, "budget_exhausted": 400}]
    doc["cpus"][1]["softnet"] = {"time_squeeze": 100}
    top = analyze(doc, CTX)[0]
    assert top.kind == "napi-budget-exhausted" and top.cpu == 1
    change = top.fixes[0].changes[0]
    assert (change.key, change.value, change.netns, change.expected_current) == (
        "net.core.netdev_budget", "600", None, "300")


def test_cpu_backlog_drops():
    doc = doc_with(drops={"CPU_BACKLOG": 900})
    doc["cpus"][1]["drops"] = {"CPU_BACKLOG": 900}
    doc["cpus"][0]["softnet"] = {"dropped": 880}
    top = analyze(doc, CTX)[0]
    assert top.kind == "cpu-backlog-drops" and top.severity == "critical"
    assert top.pod == "web" and top.cpu == 0  # the CPU whose backlog was full (softnet)
    assert top.evidence["drops_by_pod"] == {"web": 900}
    assert top.fixes[0].changes[0].value == "2048" and top.fixes[0].scope == "node"


def test_conntrack_insert_failed_names_the_dns_race():
    top = analyze(doc_with(conntrack={"insert_failed": 500, "clash_resolve": 3}), CTX)[0]
    assert top.kind == "conntrack-insert-failed" and top.pod == "web"
    assert "single-request-reopen" in top.fixes[0].snippet
    assert any("NodeLocal" in fix.title for fix in top.fixes)


def test_conntrack_table_full_sizes_from_the_peak():
    top = analyze(doc_with(conntrack={"drop": 135, "count_now": 64, "max_now": 64}), CTX)[0]
    assert top.kind == "conntrack-table-full" and top.severity == "critical"
    assert top.fixes[0].changes[0].key == "net.netfilter.nf_conntrack_max"
    assert top.fixes[0].changes[0].value == "128"


def test_rcvbuf_drops():
    top = analyze(doc_with(drops={"SOCKET_RCVBUFF": 991}, netstat={"Udp.RcvbufErrors": 991}), CTX)[0]
    assert top.kind == "socket-rcvbuf-drops" and top.severity == "critical"
    assert {fix.scope for fix in top.fixes} == {"app", "node"}


@pytest.mark.parametrize("sent, expected", [(100_000, "warning"), (10_000, "critical"), (10_000_000, None)])
def test_retransmits_are_judged_relative_to_traffic(sent, expected):
    findings = analyze(doc_with(retransmits=900, retransmitted_segments=1000,
                                netstat={"Tcp.OutSegs": sent}), CTX)
    assert [f.severity for f in findings if f.kind == "tcp-retransmits"] == ([expected] if expected else [])


def test_findings_are_ranked_by_severity_then_rate():
    doc = doc_with(drops={"SOCKET_RCVBUFF": 50}, retransmits=900, retransmitted_segments=900,
                   netstat={"TcpExt.ListenOverflows": 600})
    severities = [f.severity for f in analyze(doc, CTX)]
    assert severities == sorted(severities, key=["critical", "warning", "info"].index)
    assert analyze(doc, CTX)[0].kind == "listen-overflow"


def _lossy(flow_drops: list[dict]) -> dict:
    doc = doc_with(retransmits=120, retransmitted_segments=130, netstat={"Tcp.OutSegs": 2000})
    doc["flows"] = [{"pod": "web", "netns": 11, "family": "ipv4", "saddr": "10.0.0.5", "sport": 40000,
                     "daddr": "10.0.0.9", "dport": 80, "retransmits": 120, "retransmitted_segments": 130}]
    doc["flow_drops"] = flow_drops
    return doc


def _drop(reason: str, saddr: str, sport: int, daddr: str, dport: int, count: int, where: str = "node",
          symbol: str = "nft_do_chain+0x46f") -> dict:
    return {"pod": where, "netns": 99, "family": "ipv4", "saddr": saddr, "sport": sport, "daddr": daddr,
            "dport": dport, "reason": reason, "symbol": symbol, "count": count}


def test_retransmits_name_the_drop_on_their_flows_path():
    ctx = AnalysisContext(netns_paths={11: "/run/netns/web", 99: "/run/netns/node"})
    doc = _lossy([_drop("NETFILTER_DROP", "10.0.0.5", 40000, "10.0.0.9", 80, 110),
                  _drop("QUEUE_PURGE", "10.0.0.9", 80, "10.0.0.5", 40000, 500, where="web"),      # teardown
                  _drop("NETFILTER_DROP", "10.0.0.7", 40000, "10.0.0.9", 80, 900)])             # another flow
    finding = next(f for f in analyze(doc, ctx) if f.kind == "tcp-retransmits")
    assert finding.summary.endswith("; NETFILTER_DROP at nft_do_chain+0x46f in node dropped 110 of its packets")
    assert finding.evidence["drops_on_path"] == ["NETFILTER_DROP at nft_do_chain+0x46f in node: 110 (data)"]
    first = finding.fixes[0]
    assert first.title == "find the netfilter rule in node that drops this pod's traffic"
    assert "nsenter --net=/run/netns/node nft list ruleset" in first.commands
    assert finding.fixes[-1].title == "find where the path loses packets"


def test_lost_acks_count_in_the_reverse_direction():
    doc = _lossy([_drop("SOCKET_BACKLOG", "10.0.0.9", 80, "10.0.0.5", 40000, 60, where="peer",
                        symbol="tcp_add_backlog+0x5c")])
    finding = next(f for f in analyze(doc, CTX) if f.kind == "tcp-retransmits")
    assert finding.evidence["drops_on_path"] == ["SOCKET_BACKLOG at tcp_add_backlog+0x5c in peer: 60 (acks)"]
    assert "SOCKET_BACKLOG at tcp_add_backlog+0x5c in peer dropped 60" in finding.summary
    assert finding.fixes[0].title == "stop the SOCKET_BACKLOG drops in peer"


def test_a_few_drops_are_evidence_but_not_the_headline():
    doc = _lossy([_drop("NETFILTER_DROP", "10.0.0.5", 40000, "10.0.0.9", 80, 3)])
    finding = next(f for f in analyze(doc, CTX) if f.kind == "tcp-retransmits")
    assert finding.evidence["drops_on_path"] and "dropped" not in finding.summary
    assert [f.title for f in finding.fixes] == ["find where the path loses packets"]


def test_a_queue_whose_move_is_pending_is_not_named_on_its_old_cpu():
    """effective_affinity outside smp_affinity: written elsewhere, not fired since (issue 19)."""
    from profiler.system.irqs import landing_cpus_text

    assert landing_cpus_text("2", "0") == {2} and landing_cpus_text("0-3", "1") == {1}
    assert landing_cpus_text("0-3", None) == {0, 1, 2, 3}
    doc = copy.deepcopy(BASE)
    doc["node"]["nics"][0]["queues"][0].update(affinity="1", effective_affinity="0")
    doc["cpus"][0]["softirq"] = {"NET_RX": {"count": 9, "time_ns": 6_000_000_000}}
    doc["cpus"][1]["softirq"] = {"NET_RX": {"count": 9, "time_ns": 100_000_000}}
    top = analyze(doc, CTX)[0]
    assert top.kind == "softirq-imbalance" and top.cpu == 0
    assert "nic_queue_irqs_on_cpu" not in top.evidence, "its interrupts will land on CPU 1"
