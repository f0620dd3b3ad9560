"""IRQ affinity for real (issue 19, item 1): a 4-queue virtio-net NIC in the bookworm-6.1-mq
guest (4 vCPUs, one MSI-X vector per queue), flows from the harness's namespace over the tap.

What is asserted is what the kernel did, read from its own counters: per-CPU deltas of each
queue vector in /proc/interrupts, and the values in /proc/irq/N/ and queues/*/. netprof's
finding is checked only for naming the NIC and the CPU. The tests run in file order and share
one capture; the module puts every value back at the end, whatever happened.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from profiler.fix.command import replan
from tests.kernels.guest_side import (affinity_list, count_deltas, cpus_taking, guest_nics, keep_capture,
                                      net_rx_shares, queues, set_affinity, restore_tunables, tunables)

NETPROF = str(Path(".venv/bin/netprof").resolve())
# Seconds of interrupt counting per measurement: the harness sends 32 flows x 100 packets/s.
WINDOW_S = 6
CAPTURE_S = 10


class State:
    capture: Path
    piled: dict[str, str]


@pytest.fixture(scope="module")
def nic(tmp_path_factory):
    ((ifname, _, _),) = guest_nics()
    vectors = [q for q in queues(ifname) if q.irq is not None]
    irqs = [q.irq for q in vectors]
    original = tunables(ifname, irqs)
    state = State()
    state.workdir = tmp_path_factory.mktemp("mq")
    yield ifname, vectors, state
    restore_tunables(original)


def _input_irqs(vectors) -> list[int]:
    return [q.irq for q in vectors if q.kind == "rx"]


def test_four_channels_one_vector_per_queue(nic):
    ifname, vectors, _ = nic
    assert os.path.basename(os.readlink(f"/sys/class/net/{ifname}/device/driver")) == "virtio_net"
    by_kind = {(q.kind, q.index): q.irq_name for q in vectors}
    assert sorted(by_kind) == sorted((kind, i) for i in range(4) for kind in ("rx", "tx"))
    assert all(name.endswith(("input.%d" % i, "output.%d" % i)) for (_, i), name in by_kind.items())
    assert len({q.irq for q in vectors}) == 8


def test_flows_reach_every_input_queue_and_affinity_moves_them(nic):
    ifname, vectors, _ = nic
    inputs = {q.index: q.irq for q in vectors if q.kind == "rx"}
    for index, irq in inputs.items():
        set_affinity(irq, str(index))
    deltas = count_deltas(WINDOW_S, list(inputs.values()))
    for index, irq in inputs.items():
        assert sum(deltas[irq]) > 0, f"input.{index} took no interrupts: the flows did not reach it ({deltas})"
        # The write moved the vector at once: its interrupts are on its CPU only.
        assert cpus_taking({irq: deltas[irq]}) == {index}, deltas


def test_piled_on_cpu0_gives_a_finding_naming_the_nic_and_cpu(nic):
    ifname, vectors, state = nic
    for q in vectors:
        set_affinity(q.irq, "0")
    deltas = count_deltas(WINDOW_S, _input_irqs(vectors))
    assert cpus_taking(deltas) == {0}, f"piling on CPU 0 did not hold: {deltas}"
    assert all(sum(deltas[irq]) >= 100 for irq in deltas), f"an input queue is nearly idle: {deltas}"
    state.piled = tunables(ifname, [q.irq for q in vectors])
    state.capture = state.workdir / "piled.json"
    with open(state.capture, "w") as out:
        subprocess.run([NETPROF, "profile", "-d", str(CAPTURE_S), "--json"], stdout=out, check=True, timeout=900)
    keep_capture(state.capture)
    doc = json.loads(state.capture.read_text())
    findings = replan(doc)
    imbalance = [f for f in findings if f.kind == "softirq-imbalance"]
    assert imbalance, (f"no softirq-imbalance finding; got {[f.kind for f in findings]}; "
                       f"NET_RX share by CPU {net_rx_shares(doc)}")
    finding = imbalance[0]
    assert finding.cpu == 0
    assert any(ifname in text for text in finding.evidence.get("nic_queue_irqs_on_cpu", [])), finding.evidence
    assert ifname in finding.summary and "CPU 0" in finding.summary


def test_fix_spreads_the_input_queues_with_each_channel_together(nic):
    ifname, vectors, state = nic
    journal = state.workdir / "journal"
    subprocess.run([NETPROF, "fix", "--from", str(state.capture), "--apply", "--only", "softirq-imbalance",
                    "--journal-dir", str(journal)], check=True, timeout=600)
    for index in range(4):
        rx = next(q.irq for q in vectors if q.kind == "rx" and q.index == index)
        tx = next(q.irq for q in vectors if q.kind == "tx" and q.index == index)
        assert affinity_list(rx) == affinity_list(tx), f"channel {index}: RX and TX apart"
    deltas = count_deltas(WINDOW_S, _input_irqs(vectors))
    busy = cpus_taking(deltas, minimum=5)
    assert len(busy) >= 3, f"input-queue interrupts on CPUs {sorted(busy)} only: {deltas}"


def test_rollback_restores_every_value(nic):
    ifname, vectors, state = nic
    subprocess.run([NETPROF, "fix", "--rollback", "--journal-dir", str(state.workdir / "journal")],
                   check=True, timeout=600)
    assert tunables(ifname, [q.irq for q in vectors]) == state.piled
    deltas = count_deltas(WINDOW_S, _input_irqs(vectors))
    assert cpus_taking(deltas) == {0}, f"after rollback the interrupts left CPU 0: {deltas}"
