"""Queue IRQ names as real drivers print them, from /proc/interrupts recorded in QEMU guests
(tests/fixtures/interrupts/, recorded by the kernel harness's NIC guests: see ABOUT.md there).

Each file is a guest's whole /proc/interrupts, unedited: every row the parser must place
(a NIC queue's vector, with its kind and index) and every row it must leave alone
(the driver's other vector, virtio block/console devices, timers, the disk controller).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from profiler.system.irqs import QueueIrqName, classify_irq_name, parse_interrupts

RECORDED = Path(__file__).resolve().parent.parent / "fixtures" / "interrupts"


def _rows(name: str) -> dict[int, str]:
    return {row.irq: row.name for row in parse_interrupts((RECORDED / name).read_text())}


def _queue_rows(name: str) -> dict[str, QueueIrqName]:
    return {irq_name: queue for irq_name in _rows(name).values()
            if (queue := classify_irq_name(irq_name)) is not None}


def test_e1000e_and_vmxnet3_queue_vectors():
    # Linux 6.1 in QEMU 7.2, 2 vCPUs: e1000e (82574L, MSI-X) and vmxnet3 (2 channels).
    queues = _queue_rows("e1000e-vmxnet3-6.1.txt")
    assert queues == {
        # e1000e: separate rx and tx vectors, named after the interface at open time.
        "enp0s10-rx-0": QueueIrqName("rx", 0, ifname_candidates=("enp0s10",)),
        "enp0s10-tx-0": QueueIrqName("tx", 0, ifname_candidates=("enp0s10",)),
        # vmxnet3's buddy-share mode: one vector per channel serves rx-n and tx-n.
        "enp0s11-rxtx-0": QueueIrqName("combined", 0, ifname_candidates=("enp0s11",)),
        "enp0s11-rxtx-1": QueueIrqName("combined", 1, ifname_candidates=("enp0s11",)),
    }


def test_e1000e_and_vmxnet3_other_vectors_are_no_queues():
    rows = _rows("e1000e-vmxnet3-6.1.txt")
    # The link/other vector ("enp0s10") and vmxnet3's event vector carry no queue.
    assert "enp0s10" in rows.values() and "enp0s11-event-2" in rows.values()
    for name in ("enp0s10", "enp0s11-event-2", "virtio0-requests", "ahci[0000:00:1f.2]", "timer"):
        assert classify_irq_name(name) is None, name


def test_recorded_counts_are_placed_by_cpu():
    rows = {row.name: row for row in parse_interrupts((RECORDED / "e1000e-vmxnet3-6.1.txt").read_text())}
    assert rows["enp0s10-rx-0"].interrupts_per_cpu == (3, 0)
    assert rows["enp0s10-tx-0"].interrupts_per_cpu == (0, 6)
    assert rows["enp0s11-rxtx-0"].chip == "PCI-MSI" and rows["enp0s11-rxtx-0"].hwirq == "180224-edge"
