"""irqbalance for real (issue 19, item 2): Debian's irqbalance running in the bookworm-6.1-mq
guest. netprof reads what it runs with (its pid, banned CPUs from its environment, banned IRQs
and policyscript from its command line), its plan says irqbalance will undo the manual
affinity and what to do; and both halves of that are checked on the kernel: irqbalance does
move hand-placed queue IRQs, and the ban the plan advises keeps them where they were put.
"""
from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from profiler.analysis.irq_plan import plan_irq_affinity
from profiler.system.irqbalance import read_irqbalance
from profiler.system.irqs import read_irq_topology
from tests.kernels.guest_side import affinity_list, guest_nics, queues, set_affinity, tunables

IRQBALANCE = shutil.which("irqbalance") or "/usr/sbin/irqbalance"
INTERVAL_S = 1
SETTLE_S = 4 * INTERVAL_S + 2


def _start(*args: str, banned_cpus: str) -> subprocess.Popen:
    env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin"), "IRQBALANCE_BANNED_CPULIST": banned_cpus}
    proc = subprocess.Popen([IRQBALANCE, "--foreground", f"--interval={INTERVAL_S}", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    assert proc.poll() is None, f"irqbalance exited at once ({proc.returncode})"
    return proc


def _stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def nic():
    if not os.path.exists(IRQBALANCE):
        pytest.fail("irqbalance is not installed on the host (the guest sees the host's root): "
                    "apt-get install irqbalance", pytrace=False)
    ((ifname, _, _),) = guest_nics()
    vectors = [q for q in queues(ifname) if q.irq is not None]
    original = tunables(ifname, [q.irq for q in vectors])
    yield ifname, vectors
    for path, value in original.items():
        if path.endswith("smp_affinity_list"):
            Path(path).write_text(value)


def test_netprof_reads_the_running_irqbalance_and_its_plan_says_what_to_do(nic, tmp_path):
    ifname, vectors = nic
    for q in vectors:
        set_affinity(q.irq, "0")
    script = tmp_path / "policy"
    script.write_text("#!/bin/sh\nexit 0\n")
    script.chmod(0o755)
    other = next(irq for irq in (int(n) for n in os.listdir("/proc/irq") if n.isdigit())
                 if irq not in {q.irq for q in vectors})
    topology = read_irq_topology()  # piled, before irqbalance can touch anything
    proc = _start(f"--banirq={other}", f"--policyscript={script}", banned_cpus="3")
    try:
        state = read_irqbalance()
        assert state.running and state.pid == proc.pid
        assert state.banned_cpus == {3} and state.banned_irqs == {other}
        assert state.policyscript == str(script) and state.interval_s == INTERVAL_S

        plan = plan_irq_affinity(topology, irqbalance_running=True, irqbalance=state)
        note = next(n for n in plan.notes if n.startswith("irqbalance is running"))
        assert f"(pid {proc.pid})" in note and f"every {INTERVAL_S} s" in note
        assert "will undo this plan's manual affinity" in note
        for irq in plan.planned_irqs:
            assert f"--banirq={irq}" in note
        assert f"--banirq={other}" in note  # its own ban is kept in the advised arguments
        assert "systemctl stop irqbalance" in note and "IRQBALANCE_BANNED_CPULIST=" in note
        assert str(script) in note  # the policyscript it already has is named
    finally:
        _stop(proc)


def test_irqbalance_undoes_manual_affinity_and_the_advised_ban_keeps_it(nic):
    ifname, vectors = nic
    irqs = [q.irq for q in vectors]
    # Piled by hand on CPU 0, which irqbalance is told to keep IRQs off: it moves them.
    for irq in irqs:
        set_affinity(irq, "0")
    proc = _start(banned_cpus="0")
    try:
        time.sleep(SETTLE_S)
        moved = [irq for irq in irqs if affinity_list(irq) != {0}]
    finally:
        _stop(proc)
    assert moved, "irqbalance left every hand-placed queue IRQ on its banned CPU 0"

    # The plan's advice, taken literally: its IRQBALANCE_ARGS, with the plan's writes made.
    for irq in irqs:
        set_affinity(irq, "0")
    plan = plan_irq_affinity(read_irq_topology(), irqbalance_running=True)
    note = next(n for n in plan.notes if n.startswith("irqbalance is running"))
    args = shlex.split(re.search(r'IRQBALANCE_ARGS="([^"]*)"', note).group(1))
    for move in plan.moves:
        set_affinity(move.irq, str(move.to_cpu))
    placed = {irq: affinity_list(irq) for irq in plan.planned_irqs}
    assert set(placed) >= set(irqs)
    proc = _start(*args, banned_cpus="0")
    try:
        assert read_irqbalance().banned_irqs >= set(irqs)
        time.sleep(SETTLE_S)
        assert {irq: affinity_list(irq) for irq in placed} == placed
    finally:
        _stop(proc)
