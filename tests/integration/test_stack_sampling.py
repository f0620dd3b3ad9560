"""Stacks on a CPU-time budget (bpf/stacks.h) in a real UDP drop storm: the walks keep to the
configured share of the CPUs, a rare drop site amid the storm is still sampled, each stack's
weight is the drops it stands for (exactly, with what is still pending), and reading with a
short period flips the stack maps dozens of times without losing a stack."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter

import pytest

from profiler.cost import BpfStatsSwitch, loaded_program_fds, read_prog_stats
from profiler.kernel.stacks import STACK_CREDIT_WINDOW_S
from profiler.lab.topology import Lab
from profiler.lab.workload_drops import udp_blast_argv, udp_sink_argv
from profiler.probes.drops import DropProbe, reason_name

pytestmark = pytest.mark.usefixtures("bpf_ready", "lab_ready")

# The share is set from the walk cost measured first (calibrate_walk_s) so the budget buys
# about this many walks a second per CPU: fewer than the storm's 100 (the spacing's limit),
# else the spacing alone holds the walks back and the budget is never tested. A fixed share
# cannot do it: a walk costs 2 µs on one host, 15 µs on another, a millisecond under QEMU.
BUDGET_WALKS_PER_S = 20
MIN_SHARE = 5e-6        # 5 ppm: bpf/stacks.h counts the share in parts per million
CALIBRATION_SHARE = 0.05
STORM_PORT, CLOSED_PORT = 9997, 9
STORM_S = 3.0
READ_EVERY_S = 0.05     # the shortened period: a flip of the stack maps at every read
RARE_SENDS = 5

RARE_SENDER = """
import socket, sys, time
for _ in range(int(sys.argv[2])):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b"rare", (sys.argv[1], int(sys.argv[3])))
    s.close()
    time.sleep(0.4)
"""


def calibrate_walk_s(loader, lab: Lab) -> float:
    """The mean time of one stack walk on this machine, from a short storm under a generous
    share (the programs' own walk clock)."""
    server = lab.pods["server"]
    probe = DropProbe(stack_share=CALIBRATION_SHARE)
    try:
        assert probe.attach(loader).attached and probe.stacks_status.attached, probe.stacks_status
        sink = lab.popen("server", udp_sink_argv(STORM_PORT, 30, rcvbuf=4096),
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            sink.stdout.readline()
            before = probe.read().sampling
            lab.run("client", udp_blast_argv(server.ip, STORM_PORT, 0, 64, 0.5, cpu=0), check=False)
            after = probe.read().sampling
        finally:
            sink.kill()
            sink.wait()
    finally:
        probe.detach()
    walks = after.walks - before.walks
    assert walks > 0, "the calibration storm was not walked"
    return (after.walk_ns - before.walk_ns) / walks / 1e9


def _run_time_ns(probe: DropProbe) -> int:
    for _program, hook, fd in loaded_program_fds([("drops", probe._bpf)]):
        if hook in ("tp_btf:kfree_skb", "raw_tracepoint:kfree_skb"):
            return read_prog_stats(fd).run_time_ns
    raise AssertionError("no kfree_skb program")


@pytest.fixture(scope="module")
def storm():
    from profiler.kernel.features import probe_kernel
    from profiler.kernel.loader import BpfLoader

    loader = BpfLoader(probe_kernel())
    stats = BpfStatsSwitch()
    stats.enable()
    probe = None
    try:
        with Lab.up(["server", "client"]) as lab:
            walk_s = calibrate_walk_s(loader, lab)
            share = max(MIN_SHARE, BUDGET_WALKS_PER_S * walk_s)
            probe = DropProbe(stack_share=share)
            assert probe.attach(loader).attached and probe.stacks_status.attached, probe.stacks_status
            # The probe's own names: this kernel's enum, or the call sites' before 5.17.
            names = probe.reason_names
            server = lab.pods["server"]
            netns = server.netns_inode
            sink = lab.popen("server", udp_sink_argv(STORM_PORT, STORM_S + 30, rcvbuf=4096),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            try:
                sink.stdout.readline()
                run_time_before = _run_time_ns(probe) if stats.enabled else 0
                first = probe.read()
                started = time.monotonic()
                blast = lab.popen("client", udp_blast_argv(server.ip, STORM_PORT, 0, 64, STORM_S, cpu=0),
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                rare = lab.popen("client", [sys.executable, "-c", RARE_SENDER, server.ip, str(RARE_SENDS),
                                            str(CLOSED_PORT)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                stacks: Counter[tuple[int, str]] = Counter()
                samples: Counter[tuple[int, str]] = Counter()
                reads = 0
                while blast.poll() is None or rare.poll() is None:
                    time.sleep(READ_EVERY_S)
                    counts = probe.read()
                    reads += 1
                    for key, count in zip(counts.stacks.keys, counts.stacks.counts):
                        what = (int(key["netns_inode"]), reason_name(int(key["reason"]), names))
                        stacks[what] += int(count["events"])
                        samples[what] += int(count["samples"])
                time.sleep(0.3)
                last = probe.read()
                wall_s = time.monotonic() - started
                for key, count in zip(last.stacks.keys, last.stacks.counts):
                    what = (int(key["netns_inode"]), reason_name(int(key["reason"]), names))
                    stacks[what] += int(count["events"])
                    samples[what] += int(count["samples"])
                keys, per_cpu = probe._readers["drops"].read()
                pending: Counter[tuple[int, str]] = Counter()
                for key, values in zip(keys, per_cpu):
                    pending[(int(key["netns_inode"]), reason_name(int(key["reason"]), names))] += int(
                        values["stack_pending"].sum())
                run_time = (_run_time_ns(probe) - run_time_before) if stats.enabled else None
            finally:
                sink.kill()
                sink.wait()
        drops: Counter[tuple[int, str]] = Counter()
        for reading, sign in ((last, 1), (first, -1)):
            for key, count in zip(reading.netns_reasons, reading.per_netns_reason["count"]):
                drops[(int(key["netns_inode"]), reason_name(int(key["reason"]), names))] += sign * int(count)
        yield dict(netns=netns, first=first, last=last, stacks=stacks, samples=samples,
                   pending=pending, drops=drops, reads=reads, wall_s=wall_s, run_time_ns=run_time, share=share, walk_s=walk_s,
                   reasons=set(names.values()))
    finally:
        if probe is not None:
            probe.detach()
        stats.disable()


def test_walks_keep_to_the_configured_share_of_the_cpus(storm):
    first, last = storm["first"].sampling, storm["last"].sampling
    walk_ns = last.walk_ns - first.walk_ns
    cpus = os.cpu_count() or 1
    cap_ns = storm["share"] * STACK_CREDIT_WINDOW_S * 1e9
    # Each CPU: its share of the time, what it saved before (the cap), what a rare key may
    # borrow (the cap again), and the walk that overshoots its credit (≤1 ms on a real CPU,
    # a few of the calibrated walks under QEMU).
    allowed = cpus * (storm["share"] * storm["wall_s"] * 1e9 + 2 * cap_ns + max(1e6, 4 * storm["walk_s"] * 1e9))
    assert 0 < walk_ns <= allowed, (walk_ns, allowed)
    assert last.skipped_budget > first.skipped_budget, "the budget, not only the spacing, held the walks back"
    if storm["run_time_ns"] is not None:
        # The programs' own clock times walks inside the program: the kernel's run time holds them.
        assert walk_ns <= storm["run_time_ns"]


def test_storm_stacks_weigh_the_drops_they_stand_for(storm):
    key = (storm["netns"], "SOCKET_RCVBUFF")
    # A storm: thousands of drops a second (38,645 in 3 s in a 6.1 guest under emulation,
    # 19,957 with another guest on the machine); what is tested is the walks against them.
    assert storm["drops"][key] > 10_000, storm["drops"]
    # Every drop is in a stack's weight or still pending on its key: exactly.
    assert storm["stacks"][key] + storm["pending"][key] == storm["drops"][key]
    assert storm["samples"][key] * 100 < storm["stacks"][key], "weights, not walks: far fewer walks than drops"


def test_a_rare_site_amid_the_storm_is_still_sampled(storm):
    if "NO_SOCKET" not in storm["reasons"]:
        # Before 5.17 reasons come from call sites, and a closed port's datagram is freed in
        # __udp4_lib_rcv beside its short-packet and checksum drops: no site says NO_SOCKET.
        pytest.skip("no NO_SOCKET drop reason on this kernel (drop reasons from call sites)")
    key = (storm["netns"], "NO_SOCKET")
    assert storm["drops"][key] == RARE_SENDS, storm["drops"]
    assert storm["samples"][key] >= 1
    assert storm["stacks"][key] + storm["pending"][key] == RARE_SENDS


def test_many_generation_flips_lose_no_stack(storm):
    assert storm["reads"] >= 30, "the maps flipped at every read"
    lost = {k: storm["last"].stacks_lost[k] - storm["first"].stacks_lost[k] for k in storm["last"].stacks_lost}
    assert not any(lost.values()), lost
    ours = [k for k in storm["drops"] if k[0] == storm["netns"]]
    assert sum(storm["stacks"][k] + storm["pending"][k] for k in ours) == sum(storm["drops"][k] for k in ours)

