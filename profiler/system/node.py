"""What a capture records about the node it ran on, so that findings and fixes can be
worked out later from the JSON alone (`netprof fix --from capture.json`) and `--apply` can
tell whether it is still the same node, boot and state."""
from __future__ import annotations

import platform
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .cpus import format_cpu_list, read_cpus_online
from .irqs import IrqTopology, irqbalance_running, read_irq_topology
from ..errors import NetprofError
from ..kernel.kernel_files import read_kernel_text
from .netns import read_in_each_netns

# Node-global: set once for the whole node, whatever netns reads them.
NODE_SYSCTLS = (
    "net.core.netdev_max_backlog",
    "net.core.netdev_budget",
    "net.core.netdev_budget_usecs",
    "net.core.rmem_max",
    "net.core.rmem_default",
    "net.core.wmem_max",
    "net.core.rps_sock_flow_entries",
    "net.netfilter.nf_conntrack_max",
    "net.netfilter.nf_conntrack_buckets",
)
# Per network namespace: each pod has its own value, and a node-wide `sysctl -w` does not
# reach it (design notes §6).
POD_SYSCTLS = (
    "net.core.somaxconn",
    "net.ipv4.tcp_max_syn_backlog",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.tcp_rmem",
    "net.ipv4.udp_rmem_min",
)


# Bounds the whole visit of every pod at the end of a capture; a stuck netns costs its
# pods' sysctls (the fixes then say the value is unknown), never the capture.
POD_SYSCTLS_TIMEOUT_S = 10.0


def read_sysctls(keys: tuple[str, ...], proc_sys: Path = Path("/proc/sys")) -> dict[str, str]:
    """Values of the sysctls that exist here (a missing module's keys are just absent)."""
    values = {}
    for key in keys:
        try:
            values[key] = " ".join(read_kernel_text(proc_sys / key.replace(".", "/")).split())
        except OSError:
            continue
    return values


def topology_to_json(topology: IrqTopology) -> list[dict[str, Any]]:
    def cpus(value):
        return None if value is None else format_cpu_list(value)

    return [
        {
            "name": nic.name, "driver": nic.driver, "numa_node": nic.numa_node,
            "device": nic.device, "local_cpus": cpus(nic.local_cpus),
            "rx_queues": nic.rx_queue_count, "tx_queues": nic.tx_queue_count,
            "queues": [
                {"index": q.index, "kind": q.kind, "irq": q.irq, "irq_name": q.irq_name,
                 "affinity": cpus(q.affinity), "effective_affinity": cpus(q.effective_affinity),
                 "rps_cpus": cpus(q.rps_cpus), "xps_cpus": cpus(q.xps_cpus),
                 "interrupts": sum(q.interrupts_per_cpu)}
                for q in nic.queues
            ],
        }
        for nic in topology.nics
    ]


@dataclass(frozen=True)
class NodeContext:
    hostname: str
    kernel_release: str
    boot_id: str
    cpus_online: frozenset[int]
    sysctls: dict[str, str]
    pod_sysctls: dict[int, dict[str, str]] = field(default_factory=dict)  # netns inode → values
    irqbalance_running: bool = False
    topology: IrqTopology | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "hostname": self.hostname,
            "kernel_release": self.kernel_release,
            "boot_id": self.boot_id,
            "cpus_online": format_cpu_list(self.cpus_online),
            "sysctls": dict(self.sysctls),
            "pod_sysctls": {str(inode): values for inode, values in self.pod_sysctls.items()},
            "irqbalance_running": self.irqbalance_running,
            "nics": topology_to_json(self.topology) if self.topology else [],
        }


def collect_node_context(netns_paths: dict[int, Path], root: Path = Path("/")) -> NodeContext:
    """Read at the end of a capture. Pods that vanished are skipped: that is normal."""
    # One thread visits every pod in turn (a thread per pod cost ≈0.5 ms each: half a
    # second of every capture on a 1000-pod node).
    readings = read_in_each_netns(netns_paths, lambda: read_sysctls(POD_SYSCTLS), timeout_s=POD_SYSCTLS_TIMEOUT_S)
    pod_sysctls: dict[int, dict[str, str]] = {}
    for inode, reading in readings.items():
        if isinstance(reading, (OSError, NetprofError)):
            continue  # the pod went away meanwhile, or its netns could not be read in time
        if isinstance(reading, BaseException):
            raise reading
        pod_sysctls[inode] = reading
    try:
        boot_id = read_kernel_text(root / "proc/sys/kernel/random/boot_id").strip()
    except OSError:
        boot_id = ""
    return NodeContext(
        hostname=socket.gethostname(),
        kernel_release=platform.release(),
        boot_id=boot_id,
        cpus_online=read_cpus_online(root),
        sysctls=read_sysctls(NODE_SYSCTLS, root / "proc/sys"),
        pod_sysctls=pod_sysctls,
        irqbalance_running=irqbalance_running(root),
        topology=read_irq_topology(root),
    )
