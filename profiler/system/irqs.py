"""NIC queues, their IRQs, the CPUs those IRQs may run on, and RPS/XPS masks.

Every reader takes a filesystem root (default `/`) so unit tests run on recorded trees of other
machines (tests/fixtures/nodes/) and the live code is the same code. The text parsers
(`parse_interrupts`, `classify_irq_name`) take file contents, like psutil's; CPU lists and
masks are `profiler.system.cpus`'s.

Files are read through `profiler.kernel.root_files`: symlinks in /sys are followed by reading
them and doing the path arithmetic there, never by the OS, so a recorded tree (or a hostile
one) holding a link that points outside its root is treated as unresolvable.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..kernel.root_files import list_dir_in_root, read_text_in_root, relative_in_root, resolve_in_root, root_path
from .irqbalance import irqbalance_pid
from .cpus import (
    cpus_from_list_or_mask,
    interrupts_header_cpus,
    parse_cpu_list,
    parse_cpu_mask,
    read_cpus_online,
)

QueueKind = Literal["rx", "tx", "combined"]

# str.isdigit() also says yes to "²", which int() then refuses.
_DECIMAL = re.compile(r"^[0-9]+$")

PCI_ADDRESS = re.compile(r"^[0-9a-f]{4,}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")
VIRTIO_DEVICE = re.compile(r"^virtio\d+$")


# --------------------------------------------------------------------------- /proc/interrupts


@dataclass(frozen=True)
class InterruptRow:
    """One numbered row of /proc/interrupts."""

    irq: int
    chip: str                            # "IR-PCI-MSIX-0000:3b:00.0", "PCI-MSI", "GICv3"
    hwirq: str                           # "1-edge", "524288 Edge"; "" when the kernel shows none
    name: str                            # the action name(s): "mlx5_comp0@pci:0000:3b:00.0"
    interrupts_per_cpu: tuple[int, ...]  # indexed by CPU number; 0 for CPUs without a column


@dataclass(frozen=True)
class Irq:
    """An IRQ that is not a NIC queue's, with where it may run."""

    irq: int
    chip: str
    hwirq: str
    name: str
    interrupts_per_cpu: tuple[int, ...]
    affinity: frozenset[int]                     # empty when /proc/irq/<n> shows none
    effective_affinity: frozenset[int] | None    # None when the kernel does not expose it


# What show_interrupts() prints between the chip name and the action names: the hwirq number,
# alone or glued to the flow name ("1-edge", "1572864-edge"), a separate "Edge"/"Level"
# (GENERIC_IRQ_SHOW_LEVEL, ARM), or a bare flow name ("-event", "-msi-x" on Xen).
_HWIRQ_TOKEN = re.compile(r"^(\d+(-[A-Za-z][\w-]*)?|Edge|Level|-[A-Za-z][\w-]*)$")


def parse_interrupts(text: str) -> list[InterruptRow]:
    """The numbered rows of /proc/interrupts; NMI:, LOC:, garbage and short rows are skipped.

    The header names one column per online CPU (CPU0 CPU2 CPU3 when CPU1 is offline), so
    counts are placed by the CPU number in the header, not by column position.
    """
    lines = text.splitlines()
    if not lines:
        return []
    column_cpus = interrupts_header_cpus(lines[0])
    if not column_cpus:
        return []
    width = max(column_cpus) + 1
    rows: list[InterruptRow] = []
    for line in lines[1:]:
        tokens = line.split()
        if len(tokens) < 1 + len(column_cpus) or not tokens[0].endswith(":"):
            continue
        number = tokens[0][:-1]
        if not _DECIMAL.match(number):
            continue
        count_tokens = tokens[1 : 1 + len(column_cpus)]
        if not all(_DECIMAL.match(token) for token in count_tokens):
            continue
        counts = [int(token) for token in count_tokens]
        per_cpu = [0] * width
        for cpu, count in zip(column_cpus, counts):
            per_cpu[cpu] = count
        rest = tokens[1 + len(column_cpus) :]
        chip = rest[0] if rest else ""
        position = 1
        while position < len(rest) and _HWIRQ_TOKEN.match(rest[position]):
            position += 1
        rows.append(
            InterruptRow(
                irq=int(number),
                chip=chip,
                hwirq=" ".join(rest[1:position]),
                name=" ".join(rest[position:]),
                interrupts_per_cpu=tuple(per_cpu),
            )
        )
    return rows


def read_irq_affinity(irq: int, root: Path = Path("/")) -> tuple[frozenset[int], frozenset[int] | None]:
    """(affinity, effective affinity) of one IRQ.

    smp_affinity is what the IRQ may use; effective_affinity (CONFIG_GENERIC_IRQ_EFFECTIVE_AFF_MASK,
    x86 and arm64 since 4.13) is the CPU the irqchip really targets, usually one of them.
    """
    directory = f"proc/irq/{irq}"
    affinity = cpus_from_list_or_mask(root, directory, "smp_affinity") or frozenset()
    effective = cpus_from_list_or_mask(root, directory, "effective_affinity")
    return affinity, effective


# --------------------------------------------------------------------------- queue IRQ names


@dataclass(frozen=True)
class QueueIrqName:
    """What a queue IRQ's name says about its owner and queue.

    Exactly one of ifname_candidates / virtio_device / pci_address is how the owner is named;
    when none is, the owner is found by the IRQ number in the device's msi_irqs/.
    """

    kind: QueueKind
    index: int
    ifname_candidates: tuple[str, ...] = ()
    virtio_device: str | None = None
    pci_address: str | None = None


_VIRTIO_QUEUE = re.compile(r"^(?P<device>virtio\d+)-(?P<direction>input|output)\.(?P<index>\d+)$")
# mlx5 names completion vectors mlx5_comp<n>@pci:<bdf>; older kernels printed the bare
# mlx5_comp<n>, which only the PCI function's msi_irqs/ can place.
_MLX5_QUEUE = re.compile(r"^mlx5_comp(?P<index>\d+)(?:@pci:(?P<pci>\S+))?$")
# One vector serving an rx and a tx ring: Intel (ixgbe, igb, i40e "i40e-<if>", ice "ice-<if>",
# iavf), bnxt ("<if>-TxRx-<n>"), bnx2x ("<if>-fp-<n>"), ena ("<if>-Tx-Rx-<n>"), vmxnet3 ("<if>-rxtx-<n>").
_COMBINED_QUEUE = re.compile(r"^(?P<owner>.+?)-(?:TxRx|Tx-Rx|txrx|rxtx|fp)-(?P<index>\d+)$")
# Separate rx and tx vectors: igb/ixgbe when queues outnumber vectors, and many others.
_SPLIT_QUEUE = re.compile(r"^(?P<owner>.+)-(?P<direction>rx|tx|Rx|Tx)-(?P<index>\d+)$")


def _owner_candidates(owner: str) -> tuple[str, ...]:
    # "i40e-eth0" / "ice-ens1f0" put the driver name first; interface names may contain "-"
    # themselves, so try the whole prefix first and the driver-stripped one second.
    _, dash, tail = owner.partition("-")
    return (owner, tail) if dash and tail else (owner,)


def classify_irq_name(name: str) -> QueueIrqName | None:
    """The queue an IRQ name belongs to, or None for anything that is not a NIC queue vector."""
    # Shared legacy IRQs list several actions ("eth0-TxRx-0, foo"); the first queue-like wins.
    for action in (part.strip() for part in name.split(",")):
        if match := _VIRTIO_QUEUE.match(action):
            kind: QueueKind = "rx" if match["direction"] == "input" else "tx"
            return QueueIrqName(kind, int(match["index"]), virtio_device=match["device"])
        if match := _MLX5_QUEUE.match(action):
            return QueueIrqName("combined", int(match["index"]), pci_address=match["pci"])
        if match := _COMBINED_QUEUE.match(action):
            candidates = _owner_candidates(match["owner"])
            pci = next((c for c in candidates if PCI_ADDRESS.match(c)), None)
            if pci:
                return QueueIrqName("combined", int(match["index"]), pci_address=pci)
            return QueueIrqName("combined", int(match["index"]), ifname_candidates=candidates)
        if match := _SPLIT_QUEUE.match(action):
            kind = "rx" if match["direction"].lower() == "rx" else "tx"
            return QueueIrqName(kind, int(match["index"]), ifname_candidates=_owner_candidates(match["owner"]))
    return None


# --------------------------------------------------------------------------- the topology


@dataclass(frozen=True)
class NicQueue:
    """One NIC queue and the IRQ that serves it.

    A "combined" queue is a channel whose single vector serves rx-<index> and tx-<index>: its
    rps_cpus comes from rx-<index> and its xps_cpus from tx-<index>. A queue with irq None is a
    sysfs queue no vector was found for (extra tx queues, or a driver we do not recognise).
    """

    nic: str
    index: int
    kind: QueueKind
    irq: int | None
    affinity: frozenset[int]
    effective_affinity: frozenset[int] | None
    interrupts_per_cpu: tuple[int, ...]          # indexed by CPU number
    rps_cpus: frozenset[int] | None              # None when the queue has no rps_cpus file
    xps_cpus: frozenset[int] | None
    irq_name: str | None = None

    @property
    def irq_cpus(self) -> frozenset[int]:
        """The CPUs this queue's interrupts land on (landing_cpus)."""
        return landing_cpus(self.affinity, self.effective_affinity)


def landing_cpus(affinity: frozenset[int], effective: frozenset[int] | None) -> frozenset[int]:
    """Where an IRQ's interrupts land: its effective affinity when the kernel shows one inside
    smp_affinity. An effective CPU outside smp_affinity means a write is still pending -- the
    kernel moves an IRQ when it next fires, so one that has not fired since (a quiet TX
    vector) keeps its old effective CPU: smp_affinity is where it will land."""
    if effective and effective <= affinity:
        return effective
    return affinity


def landing_cpus_text(affinity: str | None, effective: str | None) -> frozenset[int]:
    """landing_cpus of a capture's node section (CPU lists as text); ValueError if unparsable."""
    allowed = parse_cpu_list(affinity or "") if affinity else frozenset()
    actual = parse_cpu_list(effective) if effective else None
    if not allowed:
        return frozenset(actual or ())
    return landing_cpus(frozenset(allowed), frozenset(actual) if actual is not None else None)


@dataclass(frozen=True)
class Nic:
    name: str
    driver: str | None
    numa_node: int | None                   # None for -1 (no NUMA information) or unknown
    queues: tuple[NicQueue, ...]
    rx_queue_count: int                     # rx-<n> directories: real_num_rx_queues
    tx_queue_count: int
    device: str | None = None               # "0000:3b:00.0", "virtio2"
    local_cpus: frozenset[int] | None = None  # the PCI device's local_cpulist


@dataclass(frozen=True)
class IrqTopology:
    cpus_online: frozenset[int]
    nics: tuple[Nic, ...]
    other_irqs: tuple[Irq, ...]

    def nic(self, name: str) -> Nic | None:
        return next((nic for nic in self.nics if nic.name == name), None)


@dataclass(frozen=True)
class _NetDevice:
    """What sysfs says about one interface that has a device behind it."""

    name: str
    netdev_dir: str          # root-relative, links resolved
    device_dir: str | None   # root-relative; None when `device` does not resolve inside root
    msi_irqs: frozenset[int]


def _net_devices(root: Path) -> list[_NetDevice]:
    devices: list[_NetDevice] = []
    for name in list_dir_in_root(root, "sys/class/net"):
        netdev = resolve_in_root(root, f"sys/class/net/{name}")
        if netdev is None or not netdev.is_dir():
            continue
        # Virtual interfaces (lo, veth, bridges, ifb) have no device link and no queue IRQs.
        if not os.path.lexists(netdev / "device"):
            continue
        netdev_dir = relative_in_root(root, netdev)
        device = resolve_in_root(root, f"{netdev_dir}/device")
        device_dir = relative_in_root(root, device) if device is not None and device.is_dir() else None
        msi_irqs: frozenset[int] = frozenset()
        if device_dir is not None:
            # msi_irqs/ sits on the PCI function; a virtio device's is on its parent.
            names = list_dir_in_root(root, f"{device_dir}/msi_irqs")
            if not names and VIRTIO_DEVICE.match(os.path.basename(device_dir)):
                names = list_dir_in_root(root, f"{os.path.dirname(device_dir)}/msi_irqs")
            msi_irqs = frozenset(int(n) for n in names if _DECIMAL.match(n))
        devices.append(_NetDevice(name, netdev_dir, device_dir, msi_irqs))
    return devices


def _read_int(root: Path, path: str) -> int | None:
    text = read_text_in_root(root, path)
    try:
        return int(text.strip()) if text is not None else None
    except ValueError:
        return None


def _device_attribute_dirs(device_dir: str) -> list[str]:
    # A virtio device's numa_node and local_cpulist live on the PCI function above it.
    dirs = [device_dir]
    if VIRTIO_DEVICE.match(os.path.basename(device_dir)) and os.path.dirname(device_dir):
        dirs.append(os.path.dirname(device_dir))
    return dirs


def _numa_node(root: Path, device_dir: str | None) -> int | None:
    if device_dir is None:
        return None
    for directory in _device_attribute_dirs(device_dir):
        node = _read_int(root, f"{directory}/numa_node")
        if node is not None:
            return node if node >= 0 else None
    return None


def _local_cpus(root: Path, device_dir: str | None) -> frozenset[int] | None:
    if device_dir is None:
        return None
    for directory in _device_attribute_dirs(device_dir):
        for name, parser in (("local_cpulist", parse_cpu_list), ("local_cpus", parse_cpu_mask)):
            text = read_text_in_root(root, f"{directory}/{name}")
            if text is None:
                continue
            try:
                return parser(text)
            except ValueError:
                continue
    return None


def _driver(root: Path, device_dir: str | None) -> str | None:
    if device_dir is None:
        return None
    # Only the link's text is needed (its last component is the driver), never its target.
    try:
        return os.path.basename(os.readlink(root_path(root) / device_dir / "driver")) or None
    except OSError:
        return None


def _queue_mask(root: Path, path: str) -> frozenset[int] | None:
    text = read_text_in_root(root, path)
    if text is None:
        return None
    try:
        return parse_cpu_mask(text)
    except ValueError:
        return None


def _rps_cpus(root: Path, netdev_dir: str, index: int) -> frozenset[int] | None:
    return _queue_mask(root, f"{netdev_dir}/queues/rx-{index}/rps_cpus")


def _xps_cpus(root: Path, netdev_dir: str, index: int) -> frozenset[int] | None:
    # Absent on single-tx-queue devices on recent kernels (this repo's virtio-1q recording).
    return _queue_mask(root, f"{netdev_dir}/queues/tx-{index}/xps_cpus")


_QUEUE_DIR = re.compile(r"^(rx|tx)-(\d+)$")


def _sysfs_queue_indices(root: Path, netdev_dir: str) -> tuple[set[int], set[int]]:
    rx: set[int] = set()
    tx: set[int] = set()
    for entry in list_dir_in_root(root, f"{netdev_dir}/queues"):
        if match := _QUEUE_DIR.match(entry):
            (rx if match.group(1) == "rx" else tx).add(int(match.group(2)))
    return rx, tx


class _DeviceIndex:
    """The ways an IRQ name can point at a NIC: interface name, virtio device, PCI address,
    or only the IRQ number listed under the PCI function's msi_irqs/."""

    def __init__(self, devices: list[_NetDevice]) -> None:
        self.by_name = {device.name: device for device in devices}
        self.by_device: dict[str, _NetDevice] = {}
        # Several netdevs can share a PCI function (switchdev representors); sorted by name,
        # the uplink comes first in the usual naming (ens1f0 before ens1f0_0), and setdefault
        # keeps it.
        for device in devices:
            if device.device_dir is not None:
                self.by_device.setdefault(os.path.basename(device.device_dir), device)
        self.by_msi_irq: dict[int, _NetDevice] = {}
        for device in devices:
            for irq in device.msi_irqs:
                self.by_msi_irq.setdefault(irq, device)

    def owner(self, queue_name: QueueIrqName, irq: int) -> _NetDevice | None:
        if queue_name.virtio_device:
            return self.by_device.get(queue_name.virtio_device)
        if queue_name.pci_address and queue_name.pci_address in self.by_device:
            return self.by_device[queue_name.pci_address]
        for candidate in queue_name.ifname_candidates:
            if candidate in self.by_name:
                return self.by_name[candidate]
        # Renamed interfaces (the vector was named "eth0-TxRx-0" before udev made it "ens1f0"),
        # bare "mlx5_comp3": the vector is still listed under its PCI function's msi_irqs/.
        return self.by_msi_irq.get(irq)


QueueKey = tuple[QueueKind, int]


def _assign_queue_irqs(
    rows: list[InterruptRow], devices: list[_NetDevice]
) -> tuple[dict[str, dict[QueueKey, InterruptRow]], list[InterruptRow]]:
    """Split /proc/interrupts into each NIC's queue vectors and everything else."""
    index = _DeviceIndex(devices)
    queue_rows: dict[str, dict[QueueKey, InterruptRow]] = {device.name: {} for device in devices}
    other_rows: list[InterruptRow] = []
    for row in rows:
        queue_name = classify_irq_name(row.name)
        owner = index.owner(queue_name, row.irq) if queue_name else None
        if queue_name is None or owner is None:
            other_rows.append(row)
            continue
        key = (queue_name.kind, queue_name.index)
        if key in queue_rows[owner.name]:
            # Two vectors claiming one queue means a name was misread: the first stays the
            # queue's, the second stays visible as an ordinary IRQ rather than being lost.
            other_rows.append(row)
            continue
        queue_rows[owner.name][key] = row
    return queue_rows, other_rows


_KIND_ORDER = {"combined": 0, "rx": 1, "tx": 2}


def _read_nic(root: Path, device: _NetDevice, vectors: dict[QueueKey, InterruptRow]) -> Nic:
    netdev_dir = device.netdev_dir
    rx_indices, tx_indices = _sysfs_queue_indices(root, netdev_dir)
    queues: list[NicQueue] = []
    rx_with_vector: set[int] = set()
    tx_with_vector: set[int] = set()
    for (kind, index), row in vectors.items():
        affinity, effective = read_irq_affinity(row.irq, root)
        serves_rx = kind in ("rx", "combined")
        serves_tx = kind in ("tx", "combined")
        if serves_rx:
            rx_with_vector.add(index)
        if serves_tx:
            tx_with_vector.add(index)
        queues.append(
            NicQueue(
                nic=device.name,
                index=index,
                kind=kind,
                irq=row.irq,
                affinity=affinity,
                effective_affinity=effective,
                interrupts_per_cpu=row.interrupts_per_cpu,
                rps_cpus=_rps_cpus(root, netdev_dir, index) if serves_rx else None,
                xps_cpus=_xps_cpus(root, netdev_dir, index) if serves_tx else None,
                irq_name=row.name,
            )
        )
    for index in sorted(rx_indices - rx_with_vector):
        queues.append(_queue_without_vector(device.name, index, "rx", rps_cpus=_rps_cpus(root, netdev_dir, index)))
    for index in sorted(tx_indices - tx_with_vector):
        queues.append(_queue_without_vector(device.name, index, "tx", xps_cpus=_xps_cpus(root, netdev_dir, index)))
    queues.sort(key=lambda queue: (queue.index, _KIND_ORDER[queue.kind]))
    return Nic(
        name=device.name,
        driver=_driver(root, device.device_dir),
        numa_node=_numa_node(root, device.device_dir),
        queues=tuple(queues),
        rx_queue_count=len(rx_indices),
        tx_queue_count=len(tx_indices),
        device=os.path.basename(device.device_dir) if device.device_dir else None,
        local_cpus=_local_cpus(root, device.device_dir),
    )


def _queue_without_vector(
    nic: str,
    index: int,
    kind: QueueKind,
    rps_cpus: frozenset[int] | None = None,
    xps_cpus: frozenset[int] | None = None,
) -> NicQueue:
    return NicQueue(nic, index, kind, None, frozenset(), None, (), rps_cpus, xps_cpus)


def read_irq_topology(root: Path = Path("/")) -> IrqTopology:
    """Every NIC with a device behind it, its queues and their IRQs, and all other IRQs."""
    rows = parse_interrupts(read_text_in_root(root, "proc/interrupts") or "")
    devices = _net_devices(root)
    queue_rows, other_rows = _assign_queue_irqs(rows, devices)
    nics = tuple(_read_nic(root, device, queue_rows[device.name]) for device in devices)
    other_irqs = []
    for row in other_rows:
        affinity, effective = read_irq_affinity(row.irq, root)
        other_irqs.append(Irq(row.irq, row.chip, row.hwirq, row.name, row.interrupts_per_cpu, affinity, effective))
    return IrqTopology(cpus_online=read_cpus_online(root), nics=nics, other_irqs=tuple(other_irqs))


def irqs_by_cpu(topology: IrqTopology) -> dict[int, list[NicQueue]]:
    """Which NIC queue IRQs may land on each CPU (effective affinity when the kernel shows it).

    Every online CPU is a key, so a CPU serving no queue shows up with an empty list.
    """
    by_cpu: dict[int, list[NicQueue]] = {cpu: [] for cpu in sorted(topology.cpus_online)}
    for nic in topology.nics:
        for queue in nic.queues:
            if queue.irq is None:
                continue
            for cpu in sorted(queue.irq_cpus):
                by_cpu.setdefault(cpu, []).append(queue)
    return by_cpu


# --------------------------------------------------------------------------- irqbalance, channels


def irqbalance_running(root: Path = Path("/")) -> bool:
    """Whether a process named irqbalance is running (it rewrites smp_affinity behind our back)."""
    return irqbalance_pid(root) is not None


def ethtool_channels(ifname: str) -> dict[str, int] | None:
    """`ethtool -l`: max_rx, max_tx, max_other, max_combined, rx_count, tx_count, other_count,
    combined_count. None when the device does not support it (lo, veth, bridges) or on any error.

    Talks to the live kernel (an ioctl), so it has no root and no fixture tests.
    """
    try:
        from pyroute2 import Ethtool
    except ImportError:
        return None
    try:
        ethtool = Ethtool()
    except Exception:
        return None
    try:
        channels = ethtool.get_channels(ifname)
        return {field: int(getattr(channels, field)) for field in channels._fields}
    except Exception:
        # pyroute2 raises NotSupportedError, NoSuchDevice, OSError and others depending on the
        # device; all mean the same to us: no channel information.
        return None
    finally:
        try:
            ethtool.close()
        except Exception:
            pass
