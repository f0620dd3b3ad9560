"""Drop reasons from call sites, the path kernels before 5.17 take (profiler/probes/
drop_sites.py), forced on this kernel: the real program classifies real drops by the
function that made them, and the counts still equal the kernel's own. On a kernel without
drop reasons (bullseye's 5.10 in tests/kernels) test_drops.py takes this path by itself."""
from __future__ import annotations

import pytest

from profiler.lab.scenario_drops import CpuBacklogScenario, RcvbufDropScenario, cpu_backlog_unavailable
from profiler.probes.drops import DropProbe
from tests.integration.test_drops import NOT_DROPS, DropRun, capture_scenario, expected_drops_via

pytestmark = pytest.mark.usefixtures("bpf_ready", "lab_ready")


@pytest.fixture(scope="module")
def rcvbuf_by_site() -> DropRun:
    return capture_scenario(RcvbufDropScenario(), run_s=1.0, probe=DropProbe(reasons_from_sites=True))


def test_receive_buffer_drops_by_site_equal_the_receivers_counter(rcvbuf_by_site):
    status = next(p for p in rcvbuf_by_site.capture.to_json()["probes"] if p["name"] == "skb_drops")
    assert status["attached"] and status["via"] == expected_drops_via(from_sites=True), status
    kernel = rcvbuf_by_site.result.counter_by_pod("Udp.RcvbufErrors")["receiver"]
    assert kernel > 900
    assert rcvbuf_by_site.pod("receiver").drops.get("SOCKET_RCVBUFF", 0) == kernel
    sites = {site.symbol.split("+")[0] for site in rcvbuf_by_site.capture.drop_site_totals()
             if site.reason == "SOCKET_RCVBUFF"}
    assert "udp_queue_rcv_one_skb" in sites, sites


def test_frees_at_other_sites_are_tallied_not_counted(rcvbuf_by_site):
    # Every kfree_skb reaches the program on this path; the ones at no listed function are
    # NOT_SPECIFIED (the socket's queue purged at close, at least), never a drop.
    assert rcvbuf_by_site.ignored["not_specified"] > 0
    for pod in rcvbuf_by_site.capture.pod_totals():
        assert not set(pod.drops) & set(NOT_DROPS), (pod.pod, dict(pod.drops))
        assert set(pod.drops) <= {"SOCKET_RCVBUFF", "CPU_BACKLOG", "NETFILTER_DROP"}, dict(pod.drops)


def test_cpu_backlog_drops_by_site_go_to_the_receiver():
    reason = cpu_backlog_unavailable()
    if reason:
        pytest.skip(reason)
    run = capture_scenario(CpuBacklogScenario(), run_s=2.0, probe=DropProbe(reasons_from_sites=True))
    receiver = run.pod("receiver").drops.get("CPU_BACKLOG", 0)
    assert receiver > 0, {name: dict(run.pod(name).drops) for name in run.inodes}
    assert run.pod("quiet").drops.get("CPU_BACKLOG", 0) <= 3
    assert {site.symbol.split("+")[0] for site in run.capture.drop_site_totals()
            if site.reason == "CPU_BACKLOG"} == {"enqueue_to_backlog"}
