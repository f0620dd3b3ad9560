"""profiler.cost without the kernel: fdinfo parsing, deltas, the stats switch's fallback and
restore, the JSON shape and the report section."""
from __future__ import annotations

import errno
import json
import os
from importlib import resources

import jsonschema
import pytest
from rich.console import Console

from profiler.capture import Capture
from profiler.cost import (
    VIA_ENABLE_STATS, VIA_SYSCTL, BpfStatsSwitch, CostReading, ProcessUsage, ProgramRunStats,
    cost_between, cost_of_span, hook_of_function, loaded_program_fds, parse_prog_fdinfo, parse_status_memory,
)
from profiler.kernel.features import KernelInfo
from profiler.report import render

# /proc/<pid>/fdinfo/<fd> of a tracepoint program on 6.18, statistics on.
PROG_FDINFO = """pos:\t0
flags:\t02000002
mnt_id:\t17
ino:\t1038
prog_type:\t5
prog_jited:\t1
prog_tag:\t59f4a931744dcdc6
memlock:\t4096
prog_id:\t1590
run_time_ns:\t14534
run_cnt:\t52
recursion_misses:\t3
verified_insns:\t2
"""
# A 5.0 kernel: no counters yet.
OLD_PROG_FDINFO = "pos:\t0\nflags:\t02000002\nprog_type:\t5\nprog_jited:\t1\nprog_id:\t7\n"
FILE_FDINFO = "pos:\t0\nflags:\t0100002\nmnt_id:\t25\nino:\t131\n"

KERNEL = KernelInfo("6.18.44", btf=True, kprobes=False, tracefs="/sys/kernel/tracing", headers=None)


def test_fdinfo_of_a_program():
    assert parse_prog_fdinfo(PROG_FDINFO) == ProgramRunStats(1590, 14534, 52, 3)


def test_fdinfo_without_counters_reads_as_zero():
    assert parse_prog_fdinfo(OLD_PROG_FDINFO) == ProgramRunStats(7, 0, 0, 0)


def test_fdinfo_of_anything_else_is_none():
    assert parse_prog_fdinfo(FILE_FDINFO) is None
    assert parse_prog_fdinfo("") is None


@pytest.mark.parametrize("name, hook", [
    ("tracepoint__irq__softirq_entry", "tracepoint:irq:softirq_entry"),
    ("tracepoint__skb__kfree_skb", "tracepoint:skb:kfree_skb"),
    ("tracepoint__syscalls__sys_enter_listen", "tracepoint:syscalls:sys_enter_listen"),
    ("raw_tracepoint__sock_rcvqueue_full", "raw_tracepoint:sock_rcvqueue_full"),
    ("tp_btf__kfree_skb", "tp_btf:kfree_skb"),
    ("fentry____sys_listen", "fentry:__sys_listen"),
    ("count_drops", "count_drops"),
])
def test_hook_from_bcc_function_name(name, hook):
    assert hook_of_function(name) == hook


class FakeFunction:
    def __init__(self, fd):
        self.fd = fd


class FakeBpf:
    def __init__(self, funcs):
        self.funcs = funcs


def test_loaded_programs_skip_detached_objects():
    live = FakeBpf({b"tracepoint__napi__napi_poll": FakeFunction(11)})
    detached = FakeBpf({})  # bcc's cleanup() empties funcs after closing the fds
    assert loaded_program_fds([("napi", live), ("drops", detached)]) == [("napi", "tracepoint:napi:napi_poll", 11)]


def reading(at_s, programs, user=0.0, system=0.0, rss=0, peak=0, anon=0):
    return CostReading(at_s, programs, ProcessUsage(user, system, rss, peak, anon))


def test_cost_between_two_readings():
    key = ("softirq", "tracepoint:irq:softirq_exit")
    start = reading(10.0, {key: ProgramRunStats(5, 1_000, 10)}, user=1.0, system=0.5)
    end = reading(12.0, {key: ProgramRunStats(5, 41_000, 1_010), ("napi", "tracepoint:napi:napi_poll"):
                         ProgramRunStats(6, 2_000, 100, 1)},
                  user=1.04, system=0.52, rss=50 << 20, peak=60 << 20)
    cost = cost_between(start, end, online_cpus=2, bpf_stats={"enabled": True, "via": VIA_ENABLE_STATS, "error": None})
    doc = cost.to_json()
    assert doc["duration_s"] == 2.0 and doc["online_cpus"] == 2
    exit_row, napi_row = doc["probes"]  # heaviest first
    assert exit_row == {"program": "softirq", "hook": "tracepoint:irq:softirq_exit", "events": 1000,
                        "events_per_s": 500.0, "run_time_ns": 40_000, "ns_per_event": 40.0,
                        "cpu_percent": 0.002, "recursion_misses": 0}
    # A program first seen in the end reading counts from zero.
    assert napi_row["events"] == 100 and napi_row["recursion_misses"] == 1
    assert doc["bpf"] == {"events": 1100, "run_time_ns": 42_000, "events_per_s": 550.0, "ns_per_event": 38.2,
                          "cpu_percent": 0.0021}
    assert doc["timed_s"] == 2.0
    assert doc["process"]["user_cpu_percent"] == pytest.approx(2.0)
    assert doc["process"]["cpu_percent"] == pytest.approx(3.0)
    assert doc["process"]["rss_bytes"] == 50 << 20 and doc["process"]["peak_rss_bytes"] == 60 << 20


def test_a_reloaded_program_counts_from_zero():
    key = ("drops", "tracepoint:skb:kfree_skb")
    start = reading(0.0, {key: ProgramRunStats(5, 9_000, 900)})
    end = reading(1.0, {key: ProgramRunStats(9, 300, 3)})  # new prog_id: detached and attached again
    (row,) = cost_between(start, end, online_cpus=1).programs
    assert (row.events, row.run_time_ns) == (3, 300)


def test_no_events_means_no_per_event_time():
    key = ("retransmits", "tracepoint:tcp:tcp_retransmit_skb")
    cost = cost_between(reading(0.0, {key: ProgramRunStats(1, 0, 0)}), reading(1.0, {key: ProgramRunStats(1, 0, 0)}),
                        online_cpus=1)
    assert cost.to_json()["probes"][0]["ns_per_event"] is None
    assert cost.to_json()["bpf"]["ns_per_event"] is None


def test_zero_duration_gives_zero_rates():
    key = ("napi", "tracepoint:napi:napi_poll")
    cost = cost_between(reading(3.0, {key: ProgramRunStats(1, 0, 0)}), reading(3.0, {key: ProgramRunStats(1, 10, 1)}),
                        online_cpus=1).to_json()
    assert cost["probes"][0]["events_per_s"] == 0.0 and cost["process"]["cpu_percent"] == 0.0


def test_span_counts_programs_only_in_timed_intervals():
    key = ("softirq", "tracepoint:irq:softirq_entry")
    start = reading(0.0, {key: ProgramRunStats(3, 0, 0)}, user=0.0)
    # Three 1-s intervals; statistics were on during the first and the third only. Some other
    # process had them on in the second too: what its counters moved then is not ours to use.
    readings = [reading(1.0, {key: ProgramRunStats(3, 1_000, 100)}, user=0.01),
                reading(2.0, {key: ProgramRunStats(3, 9_000, 900)}, user=0.02),
                reading(3.0, {key: ProgramRunStats(3, 10_000, 1_000)}, user=0.03)]
    cost = cost_of_span(start, readings, [True, False, True], online_cpus=2)
    doc = cost.to_json()
    assert doc["duration_s"] == 3.0 and doc["timed_s"] == 2.0
    (row,) = doc["probes"]
    assert row["events"] == 200 and row["run_time_ns"] == 2_000
    assert row["events_per_s"] == 100.0 and row["ns_per_event"] == 10.0
    assert row["cpu_percent"] == pytest.approx(100 * 2_000e-9 / 2.0)
    assert doc["process"]["user_cpu_percent"] == pytest.approx(1.0)  # over the whole 3 s


def test_span_with_no_timed_interval_has_rows_but_no_rates():
    key = ("napi", "tracepoint:napi:napi_poll")
    cost = cost_of_span(reading(0.0, {key: ProgramRunStats(1, 0, 0)}), [reading(1.0, {key: ProgramRunStats(1, 5, 1)})],
                        [False], online_cpus=1).to_json()
    assert cost["timed_s"] == 0.0
    assert cost["probes"][0]["events"] == 0 and cost["probes"][0]["events_per_s"] == 0.0
    assert cost["bpf"]["ns_per_event"] is None


def test_status_memory():
    status = "Name:\tpython3\nVmPeak:\t  900000 kB\nVmRSS:\t  230400 kB\nRssAnon:\t   51200 kB\nRssFile:\t  179200 kB\n"
    assert parse_status_memory(status) == (230400 * 1024, 51200 * 1024)
    assert parse_status_memory("Name:\tkthread\n") == (0, 0)


def refuse_enable_stats():
    raise OSError(errno.EINVAL, "Invalid argument")


def test_switch_prefers_the_stats_fd_and_closes_it(tmp_path):
    sysctl = tmp_path / "bpf_stats_enabled"
    sysctl.write_text("0\n")
    opened: list[int] = []

    def open_fd():
        opened.append(os.open(os.devnull, os.O_RDONLY))
        return opened[-1]

    switch = BpfStatsSwitch(sysctl, enable_stats_fd=open_fd)
    switch.enable()
    assert switch.enabled and switch.via == VIA_ENABLE_STATS
    assert sysctl.read_text() == "0\n"  # the sysctl is never written on this path
    switch.disable()
    with pytest.raises(OSError):
        os.fstat(opened[0])
    assert not switch.enabled
    switch.disable()  # twice is fine


def test_switch_falls_back_to_the_sysctl_and_restores_it(tmp_path):
    sysctl = tmp_path / "bpf_stats_enabled"
    sysctl.write_text("0\n")
    switch = BpfStatsSwitch(sysctl, enable_stats_fd=refuse_enable_stats)
    switch.enable()
    assert switch.via == VIA_SYSCTL and sysctl.read_text() == "1\n"
    switch.disable()
    assert sysctl.read_text() == "0\n"
    switch.disable()
    assert sysctl.read_text() == "0\n"


def test_switch_leaves_a_sysctl_someone_else_turned_on(tmp_path):
    sysctl = tmp_path / "bpf_stats_enabled"
    sysctl.write_text("1\n")
    switch = BpfStatsSwitch(sysctl, enable_stats_fd=refuse_enable_stats)
    switch.enable()
    assert switch.enabled
    sysctl.write_text("1\n")
    switch.disable()
    assert sysctl.read_text() == "1\n"


def test_switch_that_cannot_enable_says_why(tmp_path):
    switch = BpfStatsSwitch(tmp_path / "missing" / "bpf_stats_enabled", enable_stats_fd=refuse_enable_stats)
    switch.enable()
    assert not switch.enabled
    assert "BPF_ENABLE_STATS: Invalid argument" in switch.error and "No such file" in switch.error
    assert switch.describe() == {"enabled": False, "via": None, "error": switch.error}


def capture_with_cost(enabled: bool = True) -> Capture:
    key = ("softirq", "tracepoint:irq:softirq_exit")
    cap = Capture(KERNEL, [])
    cap.cost = cost_between(reading(0.0, {key: ProgramRunStats(1, 0, 0)}),
                            reading(10.0, {key: ProgramRunStats(1, 3_500_000, 100_000)}, user=0.2, rss=80 << 20,
                                    anon=30 << 20),
                            online_cpus=2, bpf_stats={"enabled": enabled, "via": VIA_ENABLE_STATS if enabled else None,
                                                      "error": None if enabled else "BPF_ENABLE_STATS: EPERM"})
    return cap


def schema() -> dict:
    return json.loads((resources.files("profiler") / "schemas/profile-v1.json").read_text())


def test_capture_json_carries_cost_and_validates():
    doc = capture_with_cost().to_json()
    jsonschema.validate(doc, schema())
    assert doc["cost"]["probes"][0]["ns_per_event"] == 35.0
    assert Capture(KERNEL, []).to_json()["cost"] is None


def render_text(doc: dict) -> str:
    console = Console(width=140, record=True, file=open(os.devnull, "w"))
    console.print(render(doc))
    return console.export_text()


def test_report_prints_cost():
    text = render_text(capture_with_cost().to_json())
    assert "netprof's own cost: process 2.0% of a CPU (user 2.0%), RSS 80 MiB (30 MiB its own)" in text
    assert "tracepoint:irq:softirq_exit" in text and "10.0k" in text and " 35 " in text


def test_report_says_when_bpf_time_was_not_measured():
    text = render_text(capture_with_cost(enabled=False).to_json())
    assert "BPF time not measured (BPF_ENABLE_STATS: EPERM)" in text


def test_report_of_a_capture_without_cost():
    assert "own cost" not in render_text(Capture(KERNEL, []).to_json())
