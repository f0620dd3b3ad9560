"""RPS for real (issue 19, item 1): the same NIC cut to one channel (ethtool -L combined 1),
so IRQ affinity cannot spread it and netprof's plan uses rx-0's rps_cpus.

Measured with the kernel's own counters: /proc/net/softnet_stat's per-CPU `processed` (the
CPU that ran the stack over a packet: with RPS, the target CPU's backlog) and the input
vector's /proc/interrupts deltas. The module puts the channels and every value back.
"""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from profiler.fix.command import replan
from tests.kernels.guest_side import (combined_channels, count_deltas, cpus_taking, guest_nics, queues, set_affinity,
                                      softnet_processed, restore_tunables, tunables)

NETPROF = str(Path(".venv/bin/netprof").resolve())
WINDOW_S = 6
CAPTURE_S = 10




def _processed_over(seconds: float) -> dict[int, int]:
    before = softnet_processed()
    time.sleep(seconds)
    after = softnet_processed()
    return {cpu: after[cpu] - before.get(cpu, 0) for cpu in after}


@pytest.fixture(scope="module")
def one_channel(tmp_path_factory):
    ((ifname, _, _),) = guest_nics()
    channels = combined_channels(ifname)
    subprocess.run(["ethtool", "-L", ifname, "combined", "1"], check=True)
    time.sleep(1)
    vectors = [q for q in queues(ifname) if q.irq is not None]
    original = tunables(ifname, [q.irq for q in vectors])
    yield ifname, vectors, tmp_path_factory.mktemp("rps")
    restore_tunables(original)
    subprocess.run(["ethtool", "-L", ifname, "combined", str(channels)], check=True)


def test_rps_from_the_plan_spreads_the_stack_and_rollback_restores(one_channel):
    ifname, vectors, workdir = one_channel
    assert sorted(p.name for p in Path(f"/sys/class/net/{ifname}/queues").iterdir()) == ["rx-0", "tx-0"]
    input0 = next(q.irq for q in vectors if q.kind == "rx" and q.index == 0)
    for q in vectors:
        set_affinity(q.irq, "0")
    Path(f"/sys/class/net/{ifname}/queues/rx-0/rps_cpus").write_text("0")
    assert cpus_taking(count_deltas(WINDOW_S, [input0])) == {0}
    processed = _processed_over(WINDOW_S)
    assert processed[0] > 0 and sum(n for cpu, n in processed.items() if cpu != 0) <= processed[0] // 10, processed
    piled = tunables(ifname, [q.irq for q in vectors])

    capture = workdir / "one-queue.json"
    with open(capture, "w") as out:
        subprocess.run([NETPROF, "profile", "-d", str(CAPTURE_S), "--json"], stdout=out, check=True, timeout=900)
    rps_path = f"/sys/class/net/{ifname}/queues/rx-0/rps_cpus"
    planned = [change for finding in replan(json.loads(capture.read_text())) for fix in finding.fixes
               for change in fix.changes if change.key.endswith("/queues/rx-0/rps_cpus") and ifname in change.key]
    assert planned, "the plan for a one-queue NIC piled on CPU 0 sets no rps_cpus"

    journal = workdir / "journal"
    subprocess.run([NETPROF, "fix", "--from", str(capture), "--apply", "--journal-dir", str(journal)],
                   check=True, timeout=600)
    mask = int(Path(rps_path).read_text().strip().replace(",", ""), 16)
    assert bin(mask).count("1") >= 3, f"rps_cpus {mask:x}"
    processed = _processed_over(WINDOW_S)
    stacks = {cpu for cpu, count in processed.items() if count >= 5}
    assert len(stacks) >= 3, f"the stack ran on CPUs {sorted(stacks)} only: {processed}"
    # The interrupt itself stays where it was: RPS moves the work after the driver's poll.
    assert cpus_taking(count_deltas(WINDOW_S, [input0])) <= {0} | {cpu for cpu in range(64) if mask >> cpu & 1}

    subprocess.run([NETPROF, "fix", "--rollback", "--journal-dir", str(journal)], check=True, timeout=600)
    assert tunables(ifname, [q.irq for q in vectors]) == piled
