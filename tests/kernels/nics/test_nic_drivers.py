"""Other drivers' queue IRQs as the kernel names them (issue 19, item 3): an e1000e and a
vmxnet3 NIC in the bookworm-6.1-nics guest. netprof must find each NIC's queue vectors in the
real /proc/interrupts, and the vector it calls a NIC's rx queue must be the one that counts
when that NIC receives. The guest's /proc/interrupts is copied to $NETPROF_GUEST_OUT for
tests/fixtures/interrupts/.
"""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from tests.kernels.guest_side import guest_nics, interrupt_counts, poke, queues


@pytest.fixture(scope="module")
def nics():
    configured = guest_nics()
    time.sleep(2)  # e1000e requests its vectors at open; the link comes up a moment later
    out = os.environ.get("NETPROF_GUEST_OUT")
    if out:
        shutil.copyfile("/proc/interrupts", Path(out) / "interrupts.txt")
    return configured


def _driver(ifname: str) -> str:
    return os.path.basename(os.readlink(f"/sys/class/net/{ifname}/device/driver"))


def test_e1000e_rx_and_tx_vectors(nics):
    ifname = nics[0][0]
    assert _driver(ifname) == "e1000e"
    found = {(q.kind, q.index): q.irq_name for q in queues(ifname) if q.irq is not None}
    assert found == {("rx", 0): f"{ifname}-rx-0", ("tx", 0): f"{ifname}-tx-0"}


def test_vmxnet3_one_vector_per_channel(nics):
    ifname = nics[1][0]
    assert _driver(ifname) == "vmxnet3"
    channels = sorted(os.listdir(f"/sys/class/net/{ifname}/queues"))
    rx = [name for name in channels if name.startswith("rx-")]
    found = {(q.kind, q.index): q.irq_name for q in queues(ifname) if q.irq is not None}
    # Buddy-share mode: one "<if>-rxtx-<n>" vector per channel, every rx queue served.
    assert found == {("combined", i): f"{ifname}-rxtx-{i}" for i in range(len(rx))}


@pytest.mark.parametrize("position", [0, 1], ids=["e1000e", "vmxnet3"])
def test_the_rx_vector_counts_what_the_nic_receives(nics, position):
    ifname, _, host = nics[position]
    rx_irqs = [q.irq for q in queues(ifname) if q.irq is not None and q.kind in ("rx", "combined")]
    before = interrupt_counts()
    poke(host)
    time.sleep(1)
    after = interrupt_counts()
    grew = {irq for irq in before if sum(after[irq]) > sum(before[irq])}
    assert grew & set(rx_irqs), f"none of {ifname}'s rx vectors {rx_irqs} counted its replies"
