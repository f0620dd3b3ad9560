"""Helpers for the tests that run inside a NIC guest (tests/kernels/mq, tests/kernels/nics).

They read the kernel's own counters (/proc/interrupts, /proc/net/softnet_stat) and the files
netprof writes (/proc/irq/N/smp_affinity*, rps_cpus, xps_cpus) directly, never through
netprof's views, so a test measures what the kernel did.
"""
from __future__ import annotations

import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from profiler.system.cpus import parse_cpu_list
from profiler.system.irqs import NicQueue, parse_interrupts, read_irq_topology
from tests.kernels.guest_net import parse_guest_env


def guest_nics() -> list[tuple[str, str, str]]:
    """(ifname, guest address/len, host address) of each NIC the harness gave this guest, in
    NETPROF_GUEST_NET's order, each up with its address (idempotent)."""
    env = os.environ.get("NETPROF_GUEST_NET")
    assert env, "NETPROF_GUEST_NET is unset: this tier runs only inside a harness NIC guest"
    by_mac = {Path(f"/sys/class/net/{name}/address").read_text().strip().lower(): name
              for name in os.listdir("/sys/class/net")}
    nics = []
    for mac, address, host in parse_guest_env(env):
        ifname = by_mac.get(mac)
        assert ifname, f"no interface with MAC {mac} (have {sorted(by_mac)})"
        subprocess.run(["ip", "addr", "replace", address, "dev", ifname], check=True)
        subprocess.run(["ip", "link", "set", ifname, "up"], check=True)
        nics.append((ifname, address, host))
    return nics


def interrupt_counts() -> dict[int, tuple[int, ...]]:
    return {row.irq: row.interrupts_per_cpu for row in parse_interrupts(Path("/proc/interrupts").read_text())}


def count_deltas(seconds: float, irqs: list[int], settle_s: float = 1.0) -> dict[int, tuple[int, ...]]:
    """Per IRQ, how many interrupts each CPU took over `seconds`, counted from `settle_s` after
    the call: an interrupt already in flight when an affinity write lands still arrives on the
    old CPU (seen: one on CPU 3 right after piling on CPU 0)."""
    time.sleep(settle_s)
    before = interrupt_counts()
    time.sleep(seconds)
    after = interrupt_counts()
    return {irq: tuple(a - b for a, b in zip(after[irq], before[irq])) for irq in irqs}


def cpus_taking(deltas: dict[int, tuple[int, ...]], minimum: int = 1) -> set[int]:
    return {cpu for counts in deltas.values() for cpu, count in enumerate(counts) if count >= minimum}


def queues(ifname: str) -> list[NicQueue]:
    nic = read_irq_topology().nic(ifname)
    assert nic is not None, f"netprof sees no NIC {ifname}"
    return list(nic.queues)


def affinity_list(irq: int) -> frozenset[int]:
    return parse_cpu_list(Path(f"/proc/irq/{irq}/smp_affinity_list").read_text())


def set_affinity(irq: int, cpus: str) -> None:
    Path(f"/proc/irq/{irq}/smp_affinity_list").write_text(cpus)


def tunables(ifname: str, irqs: list[int]) -> dict[str, str]:
    """Every value netprof's IRQ plan may write for this NIC, by path."""
    paths = [f"/proc/irq/{irq}/{name}" for irq in irqs for name in ("smp_affinity", "smp_affinity_list")]
    queues_dir = Path(f"/sys/class/net/{ifname}/queues")
    for queue in sorted(os.listdir(queues_dir)):
        name = "rps_cpus" if queue.startswith("rx-") else "xps_cpus"
        if (queues_dir / queue / name).exists():
            paths.append(str(queues_dir / queue / name))
    values = {}
    for path in paths:
        try:
            values[path] = Path(path).read_text().strip()
        except OSError as exc:  # xps_cpus of a single-queue device reads ENOENT on some kernels
            values[path] = f"<{exc.strerror}>"
    return values




def combined_channels(ifname: str) -> int:
    """The NIC's current combined channel count (`ethtool -l`)."""
    text = subprocess.run(["ethtool", "-l", ifname], capture_output=True, text=True, check=True).stdout
    current = text.split("Current hardware settings:")[1]
    return int(current.split("Combined:")[1].split()[0])

def restore_tunables(values: dict[str, str]) -> None:
    """Write back what `tunables()` read; values it could not read (<…>) are left alone."""
    for path, value in values.items():
        if not value.startswith("<"):
            try:
                Path(path).write_text(value)
            except OSError:
                pass  # smp_affinity and smp_affinity_list are one value: one of them suffices

def softnet_processed() -> dict[int, int]:
    """Packets each CPU's backlog/NAPI processed (/proc/net/softnet_stat column 0, by CPU id)."""
    processed = {}
    for position, line in enumerate(Path("/proc/net/softnet_stat").read_text().splitlines()):
        fields = line.split()
        cpu = int(fields[12], 16) if len(fields) > 12 else position
        processed[cpu] = int(fields[0], 16)
    return processed


def poke(host: str, count: int = 20) -> None:
    """UDP datagrams to the namespace's address: nothing listens there, so each one that is not
    rate-limited brings back an ICMP port unreachable, received on this NIC."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for port in range(count):
            sock.sendto(b"poke", (host, 33434 + port))
            time.sleep(0.05)


def net_rx_raised() -> dict[int, int]:
    """NET_RX softirqs each CPU ran (/proc/softirqs' NET_RX row, by CPU id)."""
    lines = Path("/proc/softirqs").read_text().splitlines()
    cpus = [int(name.removeprefix("CPU")) for name in lines[0].split()]
    row = next(line for line in lines if line.split()[0] == "NET_RX:")
    return dict(zip(cpus, (int(n) for n in row.split()[1:])))


def softirq_ticks() -> dict[int, int]:
    """Time each CPU spent in softirqs as the kernel accounts it (/proc/stat's 7th column,
    USER_HZ ticks), every vector together. Tick-sampled: under software emulation it caught
    1 tick in 6 s of a CPU the capture measured 12.5% in NET_RX, so it is shown, not judged."""
    ticks = {}
    for line in Path("/proc/stat").read_text().splitlines():
        fields = line.split()
        if fields[0].startswith("cpu") and fields[0] != "cpu":
            ticks[int(fields[0][3:])] = int(fields[7])
    return ticks


@dataclass(frozen=True)
class KernelView:
    """What the kernel counted over one window: per-IRQ per-CPU interrupts, NET_RX softirqs
    run per CPU, and softirq time per CPU (ticks)."""
    seconds: float
    interrupts: dict[int, tuple[int, ...]]
    net_rx: dict[int, int]
    softirq_ticks: dict[int, int]

    def net_rx_share(self, cpu: int) -> float:
        total = sum(self.net_rx.values())
        return self.net_rx[cpu] / total if total else 0.0


class KernelCounters:
    """Reads the kernel's counters at start() and stop(): a KernelView of the span between."""

    def __init__(self, irqs: list[int]) -> None:
        self.irqs = irqs

    def start(self) -> None:
        self._started = time.monotonic()
        self._before = (interrupt_counts(), net_rx_raised(), softirq_ticks())

    def stop(self) -> KernelView:
        after = (interrupt_counts(), net_rx_raised(), softirq_ticks())
        interrupts, net_rx, ticks = self._before
        return KernelView(time.monotonic() - self._started,
                          {irq: tuple(a - b for a, b in zip(after[0][irq], interrupts[irq])) for irq in self.irqs},
                          {cpu: after[1][cpu] - net_rx.get(cpu, 0) for cpu in after[1]},
                          {cpu: after[2][cpu] - ticks.get(cpu, 0) for cpu in after[2]})


def kernel_view(seconds: float, irqs: list[int], settle_s: float = 1.0) -> KernelView:
    """The kernel's counters over `seconds`, from `settle_s` after the call (see count_deltas)."""
    time.sleep(settle_s)
    counters = KernelCounters(irqs)
    counters.start()
    time.sleep(seconds)
    return counters.stop()


def net_rx_shares(doc: dict) -> dict[int, float]:
    """Each CPU's share of its time in NET_RX over a netprof capture, rounded for messages."""
    from profiler.document import ProfileDocument

    return {cpu.cpu: round(cpu.softirq_share("NET_RX"), 3) for cpu in ProfileDocument(doc).cpus}


def keep_capture(path: Path) -> None:
    """A copy of a capture in $NETPROF_GUEST_OUT (it comes back to the host), when set."""
    out = os.environ.get("NETPROF_GUEST_OUT")
    if out:
        Path(out, path.name).write_bytes(path.read_bytes())
