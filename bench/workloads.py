"""Workloads between two lab pods, each run in its own CPU-accounting group.

    bulk  iperf3, one TCP stream for a fixed time: Gbit/s, and CPU-seconds per GB moved
    rr    sockperf ping-pong over TCP, one message in flight: transactions/s, and
          CPU-microseconds per transaction
    drop  sockperf's UDP sender as fast as it goes, into a socket that is never read: every
          datagram is dropped (SOCKET_RCVBUFF), so skb:kfree_skb fires per packet; kpps,
          and CPU-microseconds per datagram
    retrans  iperf3 bulk with a random loss on the path (nft): a retransmit storm

Each reports the CPU time of its processes (client and server, the softirq work they do in
their own context included, see bench/cpu.py), so a tracer's cost on the packet path shows
up as CPU per unit of work, which the machine's noise (other tenants, other test runs)
disturbs far less than raw throughput. ksoftirqd's time is recorded beside it, not in it:
ksoftirqd also runs every other tenant's softirqs, and on a busy shared machine that swamps
the measure. The node's busy time over the run is recorded too, to show how loaded the
machine was by others.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field

from profiler.lab.faults import clear_faults, inject_loss
from profiler.lab.topology import Lab
from profiler.lab.workload_drops import udp_sink_argv

from .cpu import CpuGroup, ksoftirqd_cpu_ns, ksoftirqd_pids, read_node_cpu

IPERF_PORT = 5201
SOCKPERF_PORT = 11111
DROP_PORT = 9999
DROP_SINK_RCVBUF = 4096
RETRANS_LOSS_PERCENT = 10.0
# workload → (unit of work, how rate is shown, scale of cpu_per_unit, its unit)
UNITS = {
    "bulk": ("GB", "Gbit/s", 1e9, "CPU-s/GB"),
    "rr": ("transactions", "tx/s", 1e3, "CPU-µs/tx"),
    "drop": ("datagrams", "kpps", 1e3, "CPU-µs/pkt"),
    "retrans": ("GB", "Gbit/s", 1e9, "CPU-s/GB"),
}
SERVER_READY_TIMEOUT_S = 10.0
# Packages that provide the workload drivers (Debian names).
TOOLS = {"iperf3": "iperf3", "sockperf": "sockperf"}


@dataclass
class WorkResult:
    workload: str         # a key of UNITS
    units: float          # GB moved, transactions, datagrams sent
    seconds: float        # how long the traffic ran, as the driver measured it
    cpu_ns: int           # the workload's processes, over the whole run
    counters: dict[str, int] = field(default_factory=dict)  # the kernel's own count (SNMP deltas)
    ksoftirqd_ns: int = 0  # ksoftirqd threads over the run (everyone's softirqs)
    node_busy_ns: int = 0  # all CPUs busy, everyone, over the run
    wall_s: float = 0.0    # how long the measured window was

    @property
    def rate(self) -> float:
        """In UNITS[workload][1]: Gbit/s, tx/s or kpps."""
        if self.seconds <= 0:
            return 0.0
        if self.workload in ("bulk", "retrans"):
            return self.units * 8 / self.seconds
        if self.workload == "drop":
            return self.units / self.seconds / 1e3
        return self.units / self.seconds

    @property
    def cpu_per_unit(self) -> float:
        """In UNITS[workload][3]."""
        if self.units <= 0:
            return float("nan")
        return self.cpu_ns / UNITS[self.workload][2] / self.units


def missing_tools() -> list[str]:
    return [package for tool, package in TOOLS.items() if shutil.which(tool) is None]


def _wait_listening(lab: Lab, pod: str, port: int, timeout_s: float = SERVER_READY_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = lab.run(pod, ["ss", "-Hltn", f"sport = :{port}"], check=False).stdout
        if out.strip():
            return
        time.sleep(0.05)
    raise RuntimeError(f"server on port {port} in pod {pod} did not start listening")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=3)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class Workloads:
    """Runs the workloads between pods `server` and `client` of a lab."""

    def __init__(self, lab: Lab, server: str = "server", client: str = "client",
                 server_cpu: int | None = None, client_cpu: int | None = None):
        """server_cpu/client_cpu: pin each side to one CPU. Unpinned, the scheduler puts
        the two on one CPU in some runs and on two in others, which changes CPU per
        transaction by half; pinned, runs agree with each other."""
        self.lab = lab
        self.server = server
        self.client = client
        self._server_prefix = ["taskset", "-c", str(server_cpu)] if server_cpu is not None else []
        self._client_prefix = ["taskset", "-c", str(client_cpu)] if client_cpu is not None else []
        self.server_ip = lab.pods[server].ip
        self._ksoftirqd = ksoftirqd_pids()

    def run(self, workload: str, duration_s: float) -> WorkResult:
        runners = {"bulk": self.bulk, "rr": self.rr, "drop": self.drop, "retrans": self.retrans}
        if workload not in runners:
            raise ValueError(f"unknown workload {workload!r}")
        return runners[workload](duration_s)

    def _snapshot(self, group: CpuGroup) -> tuple[int, int, int, float]:
        return group.usage_ns(), ksoftirqd_cpu_ns(self._ksoftirqd), read_node_cpu().busy_ns, time.monotonic()

    @staticmethod
    def _fill(result: WorkResult, before: tuple, after: tuple) -> WorkResult:
        result.cpu_ns = after[0] - before[0]
        result.ksoftirqd_ns = after[1] - before[1]
        result.node_busy_ns = after[2] - before[2]
        result.wall_s = after[3] - before[3]
        return result

    def _measured(self, group: CpuGroup, start_server, run_client):
        server = start_server()
        try:
            before = self._snapshot(group)
            result = run_client()
            after = self._snapshot(group)
        finally:
            _stop(server)
        return result, before, after

    def bulk(self, duration_s: float, workload: str = "bulk") -> WorkResult:
        with CpuGroup(workload) as group:
            def start_server():
                server = self.lab.popen(self.server, [*self._server_prefix, "iperf3", "-s", "-1", "-B", self.server_ip, "-p", str(IPERF_PORT)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        preexec_fn=group.join_self)
                _wait_listening(self.lab, self.server, IPERF_PORT)
                return server

            def run_client():
                proc = self.lab.run(self.client, [*self._client_prefix, "iperf3", "-c", self.server_ip, "-p", str(IPERF_PORT),
                                                  "-t", f"{duration_s:g}", "-J"], preexec_fn=group.join_self)
                return json.loads(proc.stdout)

            report, before, after = self._measured(group, start_server, run_client)
        received = report["end"]["sum_received"]
        return self._fill(WorkResult(workload, received["bytes"] / 1e9, received["seconds"], 0), before, after)

    def retrans(self, duration_s: float) -> WorkResult:
        """Bulk TCP through a random loss of the client's segments: retransmits as fast as
        TCP will make them. counters: the client's Tcp.RetransSegs."""
        before = self.lab.snmp_counters(self.client)
        inject_loss(self.lab, self.client, RETRANS_LOSS_PERCENT, port=IPERF_PORT)
        try:
            result = self.bulk(duration_s, workload="retrans")
        finally:
            clear_faults(self.lab)
        after = self.lab.snmp_counters(self.client)
        result.counters["Tcp.RetransSegs"] = after["Tcp.RetransSegs"] - before["Tcp.RetransSegs"]
        return result

    def drop(self, duration_s: float) -> WorkResult:
        """counters: the server's Udp.RcvbufErrors, the kernel's count of the drops."""
        with CpuGroup("drop") as group:
            sink = self.lab.popen(self.server, udp_sink_argv(DROP_PORT, duration_s + 60, rcvbuf=DROP_SINK_RCVBUF),
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                                  preexec_fn=group.join_self)
            try:
                sink.stdout.readline()  # {"event": "listening", ...}
                counters_before = self.lab.snmp_counters(self.server)
                before = self._snapshot(group)
                output = self.lab.run(self.client, [*self._client_prefix, "sockperf", "throughput", "-i",
                                                    self.server_ip, "-p", str(DROP_PORT), "-t", f"{duration_s:g}",
                                                    "--mps=max", "-m", "64"], preexec_fn=group.join_self).stdout
                after = self._snapshot(group)
                counters_after = self.lab.snmp_counters(self.server)
            finally:
                _stop(sink)
        sent, seconds = parse_sockperf_sent(output)
        drops = counters_after["Udp.RcvbufErrors"] - counters_before["Udp.RcvbufErrors"]
        return self._fill(WorkResult("drop", sent, seconds, 0, {"Udp.RcvbufErrors": drops}), before, after)

    def rr(self, duration_s: float) -> WorkResult:
        with CpuGroup("rr") as group:
            def start_server():
                server = self.lab.popen(self.server, [*self._server_prefix, "sockperf", "server", "--tcp", "-i", self.server_ip,
                                                      "-p", str(SOCKPERF_PORT)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        preexec_fn=group.join_self)
                _wait_listening(self.lab, self.server, SOCKPERF_PORT)
                return server

            def run_client():
                return self.lab.run(self.client, [*self._client_prefix, "sockperf", "ping-pong", "--tcp", "-i", self.server_ip,
                                                  "-p", str(SOCKPERF_PORT), "-t", f"{duration_s:g}",
                                                  "--mps=max", "-m", "64"], preexec_fn=group.join_self).stdout

            output, before, after = self._measured(group, start_server, run_client)
        transactions, seconds = parse_sockperf_total(output)
        return self._fill(WorkResult("rr", transactions, seconds, 0), before, after)


_TOTAL_RUN = re.compile(r"\[Total Run\] RunTime=([\d.]+) sec;.*?ReceivedMessages=(\d+)")


_SENT = re.compile(r"Total of (\d+) messages sent in ([\d.]+) sec")


def parse_sockperf_sent(output: str) -> tuple[int, float]:
    """(datagrams sent, seconds) of a sockperf throughput run."""
    match = _SENT.search(output)
    if not match:
        raise RuntimeError(f"no 'Total of N messages sent' in sockperf's output: {output[-300:]!r}")
    return int(match.group(1)), float(match.group(2))


def parse_sockperf_total(output: str) -> tuple[int, float]:
    """(replies received, seconds) of the whole run, warm-up included: the CPU is measured
    over the whole run too."""
    match = _TOTAL_RUN.search(output)
    if not match:
        raise RuntimeError(f"no [Total Run] line in sockperf's output: {output[-300:]!r}")
    return int(match.group(2)), float(match.group(1))
