"""Scenarios that load one CPU with network softirq work.

NetRxOneCpuScenario: a UDP blast from a sender pinned to one CPU, with RPS steering the
receive path to another CPU. The profiler should find the NET_RX time, the NAPI polls of
the per-CPU backlog and softnet's `processed` on the RPS target, not on the sender's CPU.

Why the mask goes on two devices (measured on 6.18, 64-byte datagrams, 3 s): a datagram
between two pods enters the receive path twice, through the per-CPU backlog both times —
once on the sender's bridge port in the node namespace (veth → netif_rx → bridge), once on
the receiver's eth0 (bridge → veth → netif_rx → UDP). An RPS mask on the receiver's eth0
alone moved only the second hop: 0.54 s of NET_RX on the target against 1.88 s of bridging
left on the sender's CPU. With the mask on both receive points every hop follows it: about
2.1 s of NET_RX on the target against 0.2 s on the sender's CPU, which only raises NET_RX
to send the RPS IPIs.

The masks live on veth devices inside namespaces the lab made, so they die with the lab
even if this process is killed; the scenario still puts back the value it found when it
closes, and `retarget()` moves the mask between runs.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import ClassVar

from profiler.lab import LabError, run_checked
from profiler.lab.scenarios import Scenario
from profiler.lab.topology import NODE_NAME, Lab
from profiler.lab.workload_common import GRACE_S
from profiler.lab.workload_cpu import blast_argv, sink_argv

_DEVICE_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,15}$")
_MASK_RE = re.compile(r"^[0-9a-fA-F,]+$")


@dataclass(frozen=True)
class RpsMask:
    """One rx queue's RPS CPU mask as set by a scenario, with the value found before."""

    netns: str
    device: str
    original: str
    value: str

    @property
    def path(self) -> str:
        return rps_cpus_path(self.device)


def rps_cpus_path(device: str, queue: int = 0) -> str:
    # The device name comes from the lab's own topology; still refuse anything that could
    # walk out of /sys/class/net.
    if not _DEVICE_RE.match(device) or device in (".", ".."):
        raise LabError(f"bad device name {device!r}")
    return f"/sys/class/net/{device}/queues/rx-{queue}/rps_cpus"


def cpu_mask(cpus: set[int] | frozenset[int]) -> str:
    """rps_cpus syntax: hex, comma-separated 32-bit groups, most significant first."""
    value = 0
    for cpu in cpus:
        value |= 1 << cpu
    digits = f"{value:x}"
    groups = []
    while digits:
        groups.insert(0, digits[-8:])
        digits = digits[:-8]
    return ",".join(groups) or "0"


def read_rps_cpus(netns: str, device: str) -> str:
    # sysfs shows the devices of the netns that mounted it, so a setns thread would still
    # see the node's /sys; `ip netns exec` mounts a fresh sysfs for the target netns.
    return run_checked(["ip", "netns", "exec", netns, "cat", rps_cpus_path(device)]).stdout.strip()


def write_rps_cpus(netns: str, device: str, mask: str) -> None:
    if not _MASK_RE.match(mask):
        raise LabError(f"bad RPS mask {mask!r}")
    run_checked(["ip", "netns", "exec", netns, "tee", rps_cpus_path(device)], input_text=f"{mask}\n")


def usable_cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def choose_cpus(target_cpu: int | None, sender_cpu: int | None) -> tuple[int, int]:
    """(RPS target, sender CPU): two different CPUs this process may run on."""
    cpus = usable_cpus()
    if len(cpus) < 2:
        raise LabError(f"NET_RX steering needs at least 2 CPUs; this process may use only {cpus}")
    target = cpus[0] if target_cpu is None else target_cpu
    sender = next(c for c in cpus if c != target) if sender_cpu is None else sender_cpu
    for role, cpu in (("RPS target", target), ("sender", sender)):
        if cpu not in cpus:
            raise LabError(f"{role} CPU {cpu} is not usable here (CPUs: {cpus})")
    if target == sender:
        raise LabError(f"the RPS target and the sender must be different CPUs (both {target})")
    return target, sender


class NetRxOneCpuScenario(Scenario):
    name = "net-rx-one-cpu"
    description = (
        "A UDP blast from `sender` (pinned to one CPU) to `receiver`, with RPS masks on the "
        "receive path steering all NET_RX softirq work to another CPU: the profiler should "
        "show NET_RX time, backlog NAPI polls and softnet `processed` on that CPU."
    )
    pod_names = ("sender", "receiver")
    expected_pod = None
    min_cpus: ClassVar[int] = 2

    def __init__(self, prefix: str | None = None, target_cpu: int | None = None,
                 sender_cpu: int | None = None, port: int = 9000, size: int = 64) -> None:
        super().__init__(prefix)
        self.target_cpu, self.sender_cpu = choose_cpus(target_cpu, sender_cpu)
        self.port = port
        self.size = size
        self.masks: list[RpsMask] = []

    @classmethod
    def missing(cls) -> str | None:
        """Why this machine cannot run the scenario, or None."""
        cpus = usable_cpus()
        if len(cpus) < cls.min_cpus:
            return f"needs at least {cls.min_cpus} CPUs, this process may use {len(cpus)} ({cpus})"
        return None

    @property
    def expected_cpu(self) -> int:
        return self.target_cpu

    def receive_points(self, lab: Lab) -> list[tuple[str, str]]:
        """(netns, device) of every hop where the blast enters the receive path."""
        return [(lab.netns_of(NODE_NAME), lab.pods["sender"].host_veth),
                (lab.netns_of("receiver"), "eth0")]

    def prepare(self, lab: Lab) -> None:
        self._steer(lab, self.target_cpu)
        # The receiver drops the blast at its input hook, after all the NET_RX work the
        # scenario is about (both backlog hops, bridging, IP input). A socket would be the
        # next bottleneck: no reader keeps up with a flood, and socket-buffer drops would
        # then stand in front of the CPU imbalance this scenario demonstrates.
        lab.run("receiver", ["nft", "-f", "-"], input=(
            "table inet netprof_blackhole {\n"
            "  chain input {\n"
            "    type filter hook input priority 0;\n"
            f"    udp dport {self.port} drop\n"
            "  }\n"
            "}\n"))

    def retarget(self, target_cpu: int, sender_cpu: int | None = None) -> None:
        """Move the RPS target (and the sender) for the next start(), in the same lab."""
        if any(w.proc.poll() is None for w in self._workloads):
            raise LabError("retarget() while the workloads run")
        self.target_cpu, self.sender_cpu = choose_cpus(target_cpu, sender_cpu)
        self._steer(self.setup(), self.target_cpu)

    def _steer(self, lab: Lab, target_cpu: int) -> None:
        mask = cpu_mask({target_cpu})
        recorded = {(m.netns, m.device): m for m in self.masks}
        for netns, device in self.receive_points(lab):
            previous = recorded.get((netns, device))
            original = previous.original if previous else read_rps_cpus(netns, device)
            recorded[(netns, device)] = RpsMask(netns, device, original, mask)
            self.masks = list(recorded.values())
            write_rps_cpus(netns, device, mask)

    def restore_masks(self) -> None:
        errors = []
        for mask in reversed(self.masks):
            try:
                write_rps_cpus(mask.netns, mask.device, mask.original)
            except LabError as exc:
                errors.append(str(exc))
        self.masks = []
        if errors:
            raise LabError("; ".join(errors))

    def launch(self, lab: Lab, duration_s: float) -> None:
        # The sink shares the sender's CPU so the target CPU is left to softirq work alone
        # (a sink on the target was starved by NET_RX and read a twentieth of the blast).
        sink = self.spawn("receiver", "sink", sink_argv(self.port, duration_s + GRACE_S, self.sender_cpu),
                          background=True)
        self.wait_ready(sink)
        self.spawn("sender", "blast", blast_argv(lab.pods["receiver"].ip, self.port,
                                                 self.sender_cpu, self.size, duration_s))

    def close(self) -> None:
        try:
            self.stop()
            if self.lab is not None:
                self.restore_masks()
        finally:
            super().close()
