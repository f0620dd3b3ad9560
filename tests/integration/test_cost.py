"""netprof's own cost, measured on the real kernel: BPF run-time statistics per program, on
only while (and when) a session times an interval, and never left on."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from profiler.cost import SYSCTL_PATH, VIA_ENABLE_STATS, VIA_SYSCTL
from profiler.lab.topology import Lab
from profiler.live import LiveSession
from profiler.profile import ProfileOptions, run_profile
from profiler.sources.napi import NapiSource
from profiler.sources.softirq import SoftirqSource
from profiler.sources.softnet import SoftnetSource
from tests.udp_blast import blast

pytestmark = pytest.mark.usefixtures("bpf_ready", "lab_ready")

PORT = 9300
DATAGRAMS = 20_000


def stats_fds() -> int:
    """How many BPF_ENABLE_STATS descriptors this process holds."""
    count = 0
    for fd in Path("/proc/self/fd").iterdir():
        try:
            if os.readlink(fd) == "anon_inode:bpf-stats":
                count += 1
        except OSError:
            continue
    return count


def test_cost_of_each_program_matches_what_the_programs_counted():
    sysctl_before = SYSCTL_PATH.read_text()
    with Lab.up(["server", "client"]) as lab, \
            LiveSession(sources=[SoftirqSource(), NapiSource()], cost_sample_every=1) as session:
        session.start()
        assert stats_fds() == 1
        session.sample()  # programs attached one after another: start the comparison here
        blast(lab, PORT, DATAGRAMS)
        session.sample()
        latest = session.capture(with_node=False).snapshots[-1]
        last = session.capture(with_node=False, last_s=latest.ended_s - latest.started_s)
        assert len(last.snapshots) == 1
        cost = last.cost.to_json()
        polls = sum(device.polls for cpu in last.cpu_totals() for device in cpu.napi)
        net_softirqs = sum(stats.count for cpu in last.cpu_totals() for stats in cpu.softirq.values())
    print(f"cost: {cost['bpf']}, napi polls counted {polls}, NET softirqs counted {net_softirqs}")
    by_hook = {row["hook"]: row for row in cost["probes"]}
    assert cost["bpf_stats"]["enabled"] and cost["bpf_stats"]["via"] == VIA_ENABLE_STATS
    assert set(by_hook) == {"raw_tracepoint:softirq_raise", "raw_tracepoint:softirq_entry",
                            "raw_tracepoint:softirq_exit", "raw_tracepoint:napi_poll"}
    # The NAPI program runs once per poll and counts every poll: the two must agree (up to
    # a poll landing between the map read and the statistics read of a boundary).
    assert polls > 1000
    assert abs(by_hook["raw_tracepoint:napi_poll"]["events"] - polls) <= max(20, polls // 50)
    # The exit program runs for every softirq vector but counts only NET_RX/NET_TX ones.
    assert by_hook["raw_tracepoint:softirq_exit"]["events"] >= net_softirqs * 0.98
    for row in by_hook.values():
        assert 1 <= row["ns_per_event"] <= 100_000, row
        assert row["cpu_percent"] > 0
    assert cost["process"]["rss_bytes"] > 10 << 20
    assert cost["timed_s"] == pytest.approx(cost["duration_s"], abs=0.01)
    # Stopping released the statistics, and the sysctl was never written.
    assert stats_fds() == 0
    assert SYSCTL_PATH.read_text() == sysctl_before


def test_statistics_are_on_for_one_interval_in_n():
    # A source with no BPF program: switching statistics while netprof's programs run is
    # what crashed guest kernels (profiler/cost.py); when the switches happen is the same.
    with LiveSession(sources=[SoftnetSource()], cost_sample_every=3) as session:
        session.start()
        held = [stats_fds()]
        for _ in range(6):
            time.sleep(0.1)
            session.sample()
            held.append(stats_fds())
        cost = session.capture(with_node=False).cost
    # Timed: the first interval, then every third (the 4th); the 7th would be next.
    assert held == [1, 0, 0, 1, 0, 0, 1]
    assert cost.timed_s == pytest.approx(cost.duration_s / 3, rel=0.3)
    assert stats_fds() == 0


def test_a_profile_never_switches_statistics_while_its_programs_run():
    """Each switch of the statistics patches kernel text; one made while netprof's raw
    tracepoint programs ran crashed a 6.12 guest (profiler/cost.py). A one-shot capture
    turns them on before attach and off after detach, and only then."""
    held = []
    capture = run_profile(ProfileOptions(duration_s=1.2, interval_s=0.2), sources=[SoftirqSource()],
                          on_snapshot=lambda snapshot: held.append(stats_fds()), log=lambda msg: None)
    # Six intervals on the host; a 5.10 guest under emulation samples slower than 0.2 s and
    # fits three. What matters is that every one of them had the statistics on.
    assert len(held) >= 3 and set(held) == {1}, held
    assert capture.cost.timed_s == pytest.approx(capture.cost.duration_s, abs=0.01)
    assert stats_fds() == 0


def test_sysctl_fallback_is_restored_when_interrupted():
    """Where BPF_ENABLE_STATS is missing the sysctl is written; Ctrl-C must put it back."""
    before = SYSCTL_PATH.read_text().strip()
    child = subprocess.run([sys.executable, "-c", (
        "import errno\n"
        "from profiler.cost import BpfStatsSwitch, SYSCTL_PATH\n"
        "def refuse():\n"
        "    raise OSError(errno.EINVAL, 'no BPF_ENABLE_STATS')\n"
        "switch = BpfStatsSwitch(enable_stats_fd=refuse)\n"
        "switch.enable()\n"
        "print(switch.via, '=', SYSCTL_PATH.read_text().strip(), flush=True)\n"
        "raise KeyboardInterrupt\n"
    )], capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2], timeout=60)
    assert "KeyboardInterrupt" in child.stderr
    via, during = (part.strip() for part in child.stdout.split("="))
    assert via == VIA_SYSCTL and during == "1"
    assert SYSCTL_PATH.read_text().strip() == before
