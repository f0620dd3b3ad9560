import os
import shutil
from pathlib import Path

import pytest

from profiler.kernel.root_files import resolve_in_root
from profiler.system.cpus import format_cpu_list, format_cpu_mask, parse_cpu_list, parse_cpu_mask
from profiler.system.irqs import (
    QueueIrqName,
    classify_irq_name,
    ethtool_channels,
    irqbalance_running,
    irqs_by_cpu,
    parse_interrupts,
    read_irq_topology,
)

NODES = Path(__file__).resolve().parent.parent / "fixtures" / "nodes"


# ---------------------------------------------------------------- CPU lists and masks


@pytest.mark.parametrize(
    "text, cpus",
    [
        ("0-3,8,10-11\n", {0, 1, 2, 3, 8, 10, 11}),
        ("5", {5}),
        ("", set()),
        ("\n", set()),
        ("0-7:2/4", {0, 1, 4, 5}),
    ],
)
def test_parse_cpu_list(text, cpus):
    assert parse_cpu_list(text) == frozenset(cpus)


@pytest.mark.parametrize("text", ["banana", "3-1", "0-", "-1", "0-3:5/4", "1,,2", "+3", "1_0", "0-3:0/4"])
def test_parse_cpu_list_rejects_garbage(text):
    with pytest.raises(ValueError):
        parse_cpu_list(text)


def test_format_cpu_list_folds_runs():
    assert format_cpu_list({0, 1, 2, 3, 8}) == "0-3,8"
    assert format_cpu_list([11, 10, 8, 0]) == "0,8,10-11"
    assert format_cpu_list(set()) == ""
    assert parse_cpu_list(format_cpu_list({0, 2, 3, 4, 31, 63})) == {0, 2, 3, 4, 31, 63}


@pytest.mark.parametrize(
    "text, cpus",
    [
        ("ff,00000001", {0, *range(32, 40)}),
        ("00000000,00000000\n", set()),
        ("0", set()),
        ("3", {0, 1}),
        ("00ff00ff", {*range(0, 8), *range(16, 24)}),
        ("80000000,00000000", {63}),
    ],
)
def test_parse_cpu_mask(text, cpus):
    assert parse_cpu_mask(text) == frozenset(cpus)


@pytest.mark.parametrize("text", ["zz", "", "ff,", "ffffffffff", "0x3", "+3", "f_f"])
def test_parse_cpu_mask_rejects_garbage(text):
    with pytest.raises(ValueError):
        parse_cpu_mask(text)


def test_format_cpu_mask_in_the_kernels_layout():
    assert format_cpu_mask({0, *range(32, 40)}) == "ff,00000001"
    # The kernel sizes the mask by nr_cpu_ids: the leading word only as wide as needed.
    assert format_cpu_mask({0, 1}, nr_cpus=2) == "3"
    assert format_cpu_mask(set(), nr_cpus=8) == "00"
    assert format_cpu_mask(set(), nr_cpus=32) == "00000000"
    assert format_cpu_mask(set(range(40)), nr_cpus=40) == "ff,ffffffff"
    assert format_cpu_mask({5}, nr_cpus=64) == "00000000,00000020"
    for cpus in ({0}, {3, 31, 32, 95}, set(range(70))):
        assert parse_cpu_mask(format_cpu_mask(cpus, nr_cpus=96)) == cpus


# ---------------------------------------------------------------- /proc/interrupts


def test_parse_interrupts_places_counts_by_cpu_number_and_skips_arch_rows():
    text = (
        "           CPU0       CPU2       CPU3       \n"
        " 38:          5          0        536 PCI-MSIX-0000:00:03.0   1-edge      virtio2-input.0\n"
        "NMI:          0          0          0   Non-maskable interrupts\n"
        "ERR:          0\n"
        "  8:          1          2          3  IR-IO-APIC    8-edge      rtc0\n"
    )
    rows = parse_interrupts(text)
    assert [row.irq for row in rows] == [38, 8]
    assert rows[0].interrupts_per_cpu == (5, 0, 0, 536)
    assert rows[0].chip == "PCI-MSIX-0000:00:03.0"
    assert rows[0].hwirq == "1-edge"
    assert rows[0].name == "virtio2-input.0"


@pytest.mark.parametrize(
    "tail, chip, hwirq, name",
    [
        # arm64 GIC: hwirq and trigger printed apart (GENERIC_IRQ_SHOW_LEVEL).
        ("GICv3  27 Level     arch_timer", "GICv3", "27 Level", "arch_timer"),
        ("ITS-MSI 524288 Edge      eth0-TxRx-0", "ITS-MSI", "524288 Edge", "eth0-TxRx-0"),
        # Old x86: the flow name glued to the chip, no hwirq.
        ("PCI-MSI-edge      eth0-TxRx-0", "PCI-MSI-edge", "", "eth0-TxRx-0"),
        # Xen PV: a bare flow name.
        ("xen-pirq    -msi-x     ens3-Tx-Rx-0", "xen-pirq", "-msi-x", "ens3-Tx-Rx-0"),
        # Shared IRQs list every action.
        ("IR-PCI-MSI 458752-edge      PCIe PME, aerdrv", "IR-PCI-MSI", "458752-edge", "PCIe PME, aerdrv"),
        # A vector with no action left (driver unloaded).
        ("IR-IO-APIC    7-fasteoi", "IR-IO-APIC", "7-fasteoi", ""),
    ],
)
def test_parse_interrupts_chip_hwirq_and_name_layouts(tail, chip, hwirq, name):
    rows = parse_interrupts(f"           CPU0       CPU1\n 50:          1          2  {tail}\n")
    assert (rows[0].chip, rows[0].hwirq, rows[0].name) == (chip, hwirq, name)


def test_parse_interrupts_without_header_is_empty():
    assert parse_interrupts("") == []
    assert parse_interrupts(" 38:  1  2  PCI-MSI 1-edge eth0-TxRx-0\n") == []


@pytest.mark.parametrize(
    "name, expected",
    [
        ("virtio0-input.0", QueueIrqName("rx", 0, virtio_device="virtio0")),
        ("virtio0-output.3", QueueIrqName("tx", 3, virtio_device="virtio0")),
        ("mlx5_comp7@pci:0000:3b:00.0", QueueIrqName("combined", 7, pci_address="0000:3b:00.0")),
        ("mlx5_comp7", QueueIrqName("combined", 7)),
        ("eth0-TxRx-0", QueueIrqName("combined", 0, ifname_candidates=("eth0",))),
        ("ens1f0-TxRx-3", QueueIrqName("combined", 3, ifname_candidates=("ens1f0",))),
        ("i40e-eth0-TxRx-2", QueueIrqName("combined", 2, ifname_candidates=("i40e-eth0", "eth0"))),
        ("ice-0000:3b:00.0-TxRx-1", QueueIrqName("combined", 1, pci_address="0000:3b:00.0")),
        ("ens5-Tx-Rx-0", QueueIrqName("combined", 0, ifname_candidates=("ens5",))),
        ("eth0-rx-2", QueueIrqName("rx", 2, ifname_candidates=("eth0",))),
        ("eth0-tx-2", QueueIrqName("tx", 2, ifname_candidates=("eth0",))),
        ("eth0-TxRx-0, foo", QueueIrqName("combined", 0, ifname_candidates=("eth0",))),
    ],
)
def test_queue_irq_names(name, expected):
    assert classify_irq_name(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "virtio0-config", "virtio3-rx", "virtio3-event", "virtio4-input", "virtio1-req.0",
        "mlx5_async0@pci:0000:3b:00.0", "mlx5_pages_eq", "ena-mgmnt@pci:0000:00:05.0",
        "eth0", "nvme0q1", "timer", "", "ahci[0000:00:11.5]",
    ],
)
def test_non_queue_irq_names(name):
    assert classify_irq_name(name) is None


# ---------------------------------------------------------------- fixture trees


def test_mlx5_all_32_queue_irqs_pile_on_cpu0():
    root = NODES / "mlx5-32q-piled"
    topology = read_irq_topology(root)
    assert topology.cpus_online == frozenset(range(32))
    assert [nic.name for nic in topology.nics] == ["ens1f0"]
    nic = topology.nic("ens1f0")
    assert nic.driver == "mlx5_core"
    assert nic.numa_node == 0
    assert nic.device == "0000:3b:00.0"
    assert nic.local_cpus == frozenset([*range(0, 8), *range(16, 24)])
    assert (nic.rx_queue_count, nic.tx_queue_count) == (32, 32)
    assert len(nic.queues) == 32
    assert [queue.kind for queue in nic.queues] == ["combined"] * 32
    assert [queue.index for queue in nic.queues] == list(range(32))
    assert [queue.irq for queue in nic.queues] == list(range(98, 130))
    assert nic.queues[5].irq_name == "mlx5_comp5@pci:0000:3b:00.0"
    for queue in nic.queues:
        assert queue.affinity == {0}
        assert queue.effective_affinity == {0}
        assert queue.rps_cpus == frozenset()
        counts = queue.interrupts_per_cpu
        assert len(counts) == 32
        assert counts[0] > 100 * sum(counts[1:])
    # XPS is mlx5's default: channel i on the i-th CPU of cpumask_local_spread (node 0 first).
    assert nic.queues[7].xps_cpus == {7}
    assert nic.queues[8].xps_cpus == {16}
    assert nic.queues[16].xps_cpus == {8}

    by_cpu = irqs_by_cpu(topology)
    assert sorted(by_cpu) == list(range(32))
    assert [queue.irq for queue in by_cpu[0]] == list(range(98, 130))
    assert all(by_cpu[cpu] == [] for cpu in range(1, 32))

    other = {irq.irq: irq for irq in topology.other_irqs}
    assert other[97].name == "mlx5_async0@pci:0000:3b:00.0"
    assert other[61].name == "nvme0q1"
    assert not set(other) & set(range(98, 130))
    assert irqbalance_running(root) is False


def test_ixgbe_queues_spread_one_per_cpu_with_irqbalance():
    root = NODES / "ixgbe-8q-spread"
    topology = read_irq_topology(root)
    eth0 = topology.nic("eth0")
    assert eth0.driver == "ixgbe"
    assert eth0.numa_node is None  # numa_node is -1
    assert [queue.irq for queue in eth0.queues] == list(range(35, 43))
    for index, queue in enumerate(eth0.queues):
        assert (queue.kind, queue.index) == ("combined", index)
        assert queue.affinity == {index}
        assert queue.effective_affinity == {index}
        assert queue.xps_cpus == {index}
        assert queue.rps_cpus == frozenset()
    by_cpu = irqs_by_cpu(topology)
    assert {cpu: [(q.nic, q.index) for q in queues] for cpu, queues in by_cpu.items()} == {
        cpu: [("eth0", cpu)] for cpu in range(8)
    }
    # The "other causes" vector is named after the interface alone: not a queue.
    assert [irq.name for irq in topology.other_irqs if irq.irq == 43] == ["eth0"]
    assert irqbalance_running(root) is True


def test_ixgbe_down_port_has_queues_without_vectors():
    eth1 = read_irq_topology(NODES / "ixgbe-8q-spread").nic("eth1")
    assert (eth1.rx_queue_count, eth1.tx_queue_count) == (8, 8)
    assert len(eth1.queues) == 16
    assert all(queue.irq is None and queue.interrupts_per_cpu == () for queue in eth1.queues)
    tx3 = next(q for q in eth1.queues if (q.kind, q.index) == ("tx", 3))
    assert tx3.xps_cpus == {3}
    assert tx3.rps_cpus is None


def test_ena_two_enis_each_get_their_own_vectors():
    topology = read_irq_topology(NODES / "ena-4q")
    assert [nic.name for nic in topology.nics] == ["ens5", "ens6"]
    ens5, ens6 = topology.nics
    assert [q.irq for q in ens5.queues] == [28, 29, 30, 31]
    assert [q.irq for q in ens6.queues] == [33, 34, 35, 36]
    assert ens6.queues[2].irq_name == "ens6-Tx-Rx-2"
    assert {nic.driver for nic in topology.nics} == {"ena"}
    assert ens5.numa_node == 0
    assert all(q.kind == "combined" and q.affinity == {q.index} for q in ens5.queues + ens6.queues)
    assert all(q.rps_cpus == frozenset() and q.xps_cpus == frozenset() for q in ens5.queues)
    by_cpu = irqs_by_cpu(topology)
    assert {cpu: sorted(q.nic for q in queues) for cpu, queues in by_cpu.items()} == {
        cpu: ["ens5", "ens6"] for cpu in range(4)
    }
    assert {"ena-mgmnt@pci:0000:00:05.0", "ena-mgmnt@pci:0000:00:06.0"} <= {
        irq.name for irq in topology.other_irqs
    }


def test_virtio_recorded_from_this_kind_of_vm():
    root = NODES / "virtio-1q"
    topology = read_irq_topology(root)
    assert topology.cpus_online == {0, 1}
    # lo and ifb* have no device behind them.
    assert [nic.name for nic in topology.nics] == ["eth0"]
    eth0 = topology.nics[0]
    assert eth0.driver == "virtio_net"
    assert eth0.device == "virtio2"
    assert eth0.numa_node is None  # the PCI function above virtio2 says -1
    assert eth0.local_cpus == {0, 1}
    rx, tx = eth0.queues
    assert (rx.kind, rx.index, rx.irq, rx.irq_name) == ("rx", 0, 38, "virtio2-input.0")
    assert (tx.kind, tx.index, tx.irq, tx.irq_name) == ("tx", 0, 39, "virtio2-output.0")
    assert rx.affinity == tx.affinity == {0, 1}
    assert (rx.effective_affinity, tx.effective_affinity) == ({1}, {0})
    assert rx.rps_cpus == frozenset() and rx.xps_cpus is None
    assert tx.xps_cpus is None  # listed by the kernel, unreadable on a single-queue device
    other_names = {irq.name for irq in topology.other_irqs}
    assert {"virtio2-config", "virtio3-rx", "virtio3-tx", "virtio1-req.0", "virtio4-input"} <= other_names
    assert {cpu: [q.irq for q in queues] for cpu, queues in irqs_by_cpu(topology).items()} == {0: [39], 1: [38]}


class PathSpy:
    """Records every path the readers hand to the OS, to prove none is outside the root."""

    CALLS = ("open", "lstat", "stat", "readlink", "listdir", "scandir")

    def __init__(self, monkeypatch):
        self.paths: list[str] = []
        for call in self.CALLS:
            original = getattr(os, call)
            monkeypatch.setattr(os, call, self._wrap(original))

    def _wrap(self, original):
        def spy(path, *args, **kwargs):
            if isinstance(path, (str, os.PathLike)):
                self.paths.append(os.path.abspath(os.fspath(path)))
            return original(path, *args, **kwargs)

        return spy


def test_hostile_tree_neither_crashes_nor_leaves_the_root(monkeypatch):
    root = NODES / "hostile"
    with monkeypatch.context() as patch:
        spy = PathSpy(patch)
        topology = read_irq_topology(root)
        balancing = irqbalance_running(root)
    assert spy.paths
    outside = [path for path in spy.paths if not path.startswith(str(root) + os.sep) and path != str(root)]
    assert outside == []

    assert balancing is False  # irqbalance is only reachable through symlinks
    assert topology.cpus_online == {0, 2, 3}
    # loop0 (a link to itself) and abs0 (an absolute link to nothing) are skipped.
    assert [nic.name for nic in topology.nics] == ["x", "y"]
    x = topology.nic("x")
    assert (x.driver, x.numa_node, x.device, x.local_cpus) == (None, None, None, None)
    queues = {(q.kind, q.index): q for q in x.queues}
    assert queues[("combined", 0)].irq == 30
    assert queues[("combined", 0)].affinity == {0, 2, 3}
    assert queues[("combined", 0)].effective_affinity == {0}
    assert queues[("combined", 0)].interrupts_per_cpu == (5000, 0, 0, 0)
    assert queues[("combined", 0)].rps_cpus is None  # "zz,not-hex"
    assert queues[("rx", 1)].affinity == {0, 2, 3}  # from the smp_affinity mask
    assert queues[("rx", 1)].rps_cpus is None  # a link out of the tree
    assert queues[("tx", 1)].affinity == frozenset()  # no /proc/irq/32 at all
    assert queues[("tx", 1)].effective_affinity is None
    assert queues[("combined", 2)].affinity == frozenset()  # smp_affinity_list links outside
    assert queues[("combined", 2)].rps_cpus == {0, 2, 3}
    assert queues[("combined", 3)].affinity == frozenset()  # "banana"
    assert queues[("combined", 3)].effective_affinity is None  # "3-1"
    assert (x.rx_queue_count, x.tx_queue_count) == (3, 2)

    # A second vector claiming x's queue 0, an unknown interface and an empty row stay as
    # ordinary IRQs; garbage, short and negative rows are dropped.
    assert sorted(irq.irq for irq in topology.other_irqs) == [35, 36, 37, 999999999999999999999999]

    y = topology.nic("y")
    assert y.driver == "evil_drv"  # the link's text only; its target is never opened
    assert y.numa_node is None and y.local_cpus is None


def test_resolve_in_root_refuses_escapes_and_loops():
    root = NODES / "hostile"
    assert resolve_in_root(root, "sys/class/net/x/device") is None
    assert resolve_in_root(root, "sys/class/net/loop0") is None
    assert resolve_in_root(root, "../etc/passwd") is None
    assert resolve_in_root(root, "/proc/net/softnet_stat") == root / "proc/4242/net/softnet_stat"
    assert resolve_in_root(root, "sys/class/net/y/device") == root / "sys/devices/pci0000:00/0000:00:0b.0"


def _copy_tree(name: str, destination: Path) -> Path:
    copy = destination / name
    shutil.copytree(NODES / name, copy, symlinks=True)
    return copy


def test_bare_mlx5_names_are_placed_by_msi_irqs(tmp_path):
    root = _copy_tree("mlx5-32q-piled", tmp_path)
    interrupts = root / "proc/interrupts"
    interrupts.write_text(interrupts.read_text().replace("@pci:0000:3b:00.0", ""))
    nic = read_irq_topology(root).nic("ens1f0")
    assert [queue.irq for queue in nic.queues] == list(range(98, 130))
    assert nic.queues[0].irq_name == "mlx5_comp0"


def test_vectors_named_before_a_rename_are_placed_by_msi_irqs(tmp_path):
    root = _copy_tree("ixgbe-8q-spread", tmp_path)
    interrupts = root / "proc/interrupts"
    interrupts.write_text(interrupts.read_text().replace("eth0-TxRx-", "enp3s0f0-TxRx-"))
    eth0 = read_irq_topology(root).nic("eth0")
    assert [queue.irq for queue in eth0.queues] == list(range(35, 43))


def test_readers_on_a_missing_root_return_empty(tmp_path):
    topology = read_irq_topology(tmp_path / "nothing-here")
    assert (topology.cpus_online, topology.nics, topology.other_irqs) == (frozenset(), (), ())
    assert irqs_by_cpu(topology) == {}
    assert irqbalance_running(tmp_path / "nothing-here") is False


# ---------------------------------------------------------------- the live machine


def test_live_root():
    topology = read_irq_topology(Path("/"))
    assert set(os.sched_getaffinity(0)) <= topology.cpus_online
    by_cpu = irqs_by_cpu(topology)
    assert set(os.sched_getaffinity(0)) <= set(by_cpu)
    for nic in topology.nics:
        assert nic.rx_queue_count >= 0 and nic.tx_queue_count >= 0
        for queue in nic.queues:
            assert queue.nic == nic.name
    assert isinstance(irqbalance_running(Path("/")), bool)


def test_ethtool_channels_is_none_for_a_device_that_does_not_exist():
    assert ethtool_channels("netprof-none0") is None

