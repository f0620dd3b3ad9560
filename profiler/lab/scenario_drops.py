"""Scenarios that make the kernel drop packets for a known reason in a known pod.

    RcvbufDropScenario   socket receive buffers overflow (SOCKET_RCVBUFF, sock_rcvqueue_full)
    CpuBacklogScenario   a CPU's input backlog overflows (CPU_BACKLOG)

Both were measured on 6.18 (design.md §8): 1000 × 100-byte datagrams into a never-read UDP
socket with SO_RCVBUF 4096 give exactly 991 SOCKET_RCVBUFF drops = UdpRcvbufErrors; a UDP
blast from CPU1 into a pod whose veth steers its packets to CPU0 (RPS), with the node's
netdev_max_backlog at 10, gives thousands of CPU_BACKLOG drops.
"""
from __future__ import annotations

import os
from pathlib import Path

from profiler.lab import LabError
from profiler.lab.c_helpers import ensure_c_helper
from profiler.lab.scenarios import Scenario
from profiler.lab.sysctl import set_sysctl
from profiler.lab.topology import Lab
from profiler.lab.workload_common import GRACE_S
from profiler.lab.workload_drops import ping_flood_argv, rps_argv, udp_blast_argv, udp_sink_argv

# Kept short of the workloads' own runs: sinks are stopped by wait() once senders are done.
class RcvbufDropScenario(Scenario):
    name = "rcvbuf-drops"
    description = (
        "`sender` sends 1000 UDP datagrams to `receiver`, whose socket has a 4 KiB receive "
        "buffer and is never read: all but the first few are dropped (SOCKET_RCVBUFF) in "
        "`receiver`. `pinger` floods `sender` with echo requests from a ping socket that never "
        "reads its replies: those overflow in pinger (sock_rcvqueue_full + SOCKET_RCVBUFF)."
    )
    pod_names = ("receiver", "sender", "pinger")
    expected_pod = "receiver"

    def __init__(self, prefix: str | None = None, datagrams: int = 1000, size: int = 100,
                 rcvbuf: int = 4096, port: int = 5300, pings: int = 300) -> None:
        super().__init__(prefix)
        self.datagrams = datagrams
        self.size = size
        self.rcvbuf = rcvbuf
        self.port = port
        self.pings = pings

    def prepare(self, lab: Lab) -> None:
        if self.pings:
            # Ping sockets are refused unless the caller's group is in this range; the
            # default ("1 0") allows nobody. Per netns, so only pinger is touched.
            set_sysctl(lab.prefix, "net.ipv4.ping_group_range", "0 0", netns=lab.netns_of("pinger"))

    def launch(self, lab: Lab, duration_s: float) -> None:
        sink = self.spawn("receiver", "udp-sink",
                          udp_sink_argv(self.port, duration_s + GRACE_S, rcvbuf=self.rcvbuf),
                          background=True)
        self.wait_ready(sink)
        self.spawn("sender", "udp-blast",
                   udp_blast_argv(lab.pods["receiver"].ip, self.port, self.datagrams, self.size, duration_s))
        if self.pings:
            self.spawn("pinger", "ping-flood", ping_flood_argv(lab.pods["sender"].ip, self.pings, self.rcvbuf))


def cpu_backlog_unavailable(cpus: tuple[int, int] = (0, 1)) -> str | None:
    """Why CpuBacklogScenario cannot run here (None when it can): it needs two CPUs."""
    usable = os.sched_getaffinity(0)
    missing = [cpu for cpu in cpus if cpu not in usable]
    if missing:
        return (f"the CPU backlog scenario needs CPUs {cpus[0]} and {cpus[1]} "
                f"(this process may use {sorted(usable)})")
    return None


# The backlog scenario is about the per-CPU input queue: its sink must never be the
# bottleneck, or socket-buffer drops would stand in front of the backlog drops.
BACKLOG_SINK_RCVBUF = 128 * 1024 * 1024


BURST_SOURCE = Path(__file__).with_name("udp_burst.c")


class CpuBacklogScenario(Scenario):
    name = "cpu-backlog"
    description = (
        "`sender`, pinned to one CPU, blasts UDP at `receiver`, whose eth0 steers every packet "
        "to another CPU's backlog (RPS) while the node's net.core.netdev_max_backlog is 10: "
        "the backlog overflows (CPU_BACKLOG) on packets bound for `receiver`. The drop is "
        "counted on the enqueuing CPU (the sender's); softnet_stat's `dropped` charges the "
        "CPU whose backlog was full. The sysctl is node-wide and restored afterwards."
    )
    pod_names = ("receiver", "sender", "quiet")
    expected_pod = "receiver"

    def __init__(self, prefix: str | None = None, max_backlog: int = 10, backlog_cpu: int = 0,
                 sender_cpu: int = 1, port: int = 5301, size: int = 64, rate: float = 0.0,
                 burst: int = 1) -> None:
        """rate/burst: pace the blast (datagrams per second, each burst one sendmmsg() of the
        udp_burst.c helper): traffic the backlog CPU keeps up with on average, so the drops
        are the bursts' overflow of a small backlog, which a bigger netdev_max_backlog
        absorbs (0: flat out from Python, which may be more than one CPU can take)."""
        super().__init__(prefix)
        self.rate = rate
        self.burst = burst
        self.max_backlog = max_backlog
        self.backlog_cpu = backlog_cpu
        self.sender_cpu = sender_cpu
        self.port = port
        self.size = size

    def prepare(self, lab: Lab) -> None:
        reason = cpu_backlog_unavailable((self.backlog_cpu, self.sender_cpu))
        if reason:
            raise LabError(reason)
        lab.run("receiver", rps_argv("eth0", 1 << self.backlog_cpu))
        # Node-wide (not per netns): recorded before it is written, restored by Lab.down()
        # even after a crash (`netprof lab down`).
        set_sysctl(lab.prefix, "net.core.netdev_max_backlog", self.max_backlog)

    def launch(self, lab: Lab, duration_s: float) -> None:
        # The receiver reads everything, so the only drops in it are the backlog's.
        sink = self.spawn("receiver", "udp-sink", udp_sink_argv(self.port, duration_s + GRACE_S, rcvbuf=BACKLOG_SINK_RCVBUF, read=True),
                          background=True)
        self.wait_ready(sink)
        receiver = lab.pods["receiver"].ip
        if self.rate > 0:
            helper = ensure_c_helper(BURST_SOURCE)
            self.spawn("sender", "udp-burst",
                       [str(helper), receiver, str(self.port), str(self.size), f"{self.rate:g}", str(self.burst),
                        f"{duration_s:g}", str(self.sender_cpu)])
        else:
            self.spawn("sender", "udp-blast",
                       udp_blast_argv(receiver, self.port, 0, self.size, duration_s, cpu=self.sender_cpu))
