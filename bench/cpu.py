"""CPU time of a group of processes, precise to the nanosecond, and of the kernel's softirq
threads.

The workload's processes go into a cgroup-v1 cpuacct group (or a cgroup-v2 group where
that is all there is), whose usage is the scheduler's own run-time accounting. On this
kernel (CONFIG_IRQ_TIME_ACCOUNTING off) softirq work that runs on the way out of a
syscall or a local_bh_enable() in a workload process is charged to that process, which is
where veth traffic does nearly all of its NET_RX work, and where a tracepoint's BPF program
runs. What spills over into ksoftirqd is added from /proc/<pid>/stat (tick resolution).
"""
from __future__ import annotations

import os
import signal
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_V1_CPUACCT = Path("/sys/fs/cgroup/cpuacct")
CGROUP_V2_CANDIDATES = (Path("/sys/fs/cgroup/unified"), Path("/sys/fs/cgroup"))
CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
NAME_PREFIX = "netprof-bench-"


def file_name_part(text: str) -> str:
    """`text` as part of a file or cgroup name: a configuration may hold a path
    (`netprof@/tmp/base`), which must not become one."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


class CpuGroup:
    """A cgroup made for the benchmark; removed by close() (its processes must be gone)."""

    def __init__(self, label: str):
        name = f"{NAME_PREFIX}{file_name_part(label)}-{secrets.token_hex(3)}"
        if (CGROUP_V1_CPUACCT / "cpuacct.usage").exists():
            self.path = CGROUP_V1_CPUACCT / name
            self._usage = self._usage_v1
        else:
            root = next((p for p in CGROUP_V2_CANDIDATES if (p / "cgroup.controllers").exists()), None)
            if root is None:
                raise RuntimeError("no cpuacct (v1) or cgroup2 hierarchy mounted: cannot account CPU")
            self.path = root / name
            self._usage = self._usage_v2
        self.path.mkdir()

    def _usage_v1(self) -> int:
        return int((self.path / "cpuacct.usage").read_text())

    def _usage_v2(self) -> int:
        for line in (self.path / "cpu.stat").read_text().splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) * 1000
        return 0

    def usage_ns(self) -> int:
        return self._usage()

    def join_self(self) -> None:
        """Move the calling process here: a preexec_fn, so a child starts inside."""
        (self.path / "cgroup.procs").write_text(str(os.getpid()))

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def close(self) -> None:
        # Exited processes leave the group at once; wait briefly for ones still exiting.
        if self._remove(tries=50):
            return
        # Still busy: a run interrupted mid-workload (Ctrl-C, SIGTERM) closes the group before
        # the lab stops the workload. Everything in it is a process the benchmark started.
        for pid in (self.path / "cgroup.procs").read_text().split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not self._remove(tries=100):
            self.path.rmdir()  # raises: says which group is left

    def _remove(self, tries: int) -> bool:
        for _ in range(tries):
            try:
                self.path.rmdir()
                return True
            except FileNotFoundError:
                return True
            except OSError:
                time.sleep(0.05)
        return False

    def __enter__(self) -> "CpuGroup":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def remove_leftover_groups() -> list[str]:
    """Groups of a benchmark that crashed (empty ones only; a busy one is left alone)."""
    removed = []
    for root in (CGROUP_V1_CPUACCT, *CGROUP_V2_CANDIDATES):
        if not root.is_dir():
            continue
        for entry in root.glob(f"{NAME_PREFIX}*"):
            try:
                entry.rmdir()
                removed.append(str(entry))
            except OSError:
                pass
    return removed


def process_cpu_ns(pid: int) -> int:
    """utime + stime of a process (all its threads), at clock-tick resolution."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3); utime and stime are fields 14 and 15.
    ticks = int(fields[11]) + int(fields[12])
    return ticks * 1_000_000_000 // CLOCK_TICKS_PER_S


def ksoftirqd_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().startswith("ksoftirqd/"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def ksoftirqd_cpu_ns(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            total += process_cpu_ns(pid)
        except OSError:
            continue
    return total


@dataclass(frozen=True)
class NodeCpu:
    """Whole-node busy and softirq time from /proc/stat (every CPU, in ns)."""

    busy_ns: int
    softirq_ns: int


def read_node_cpu(text: str | None = None) -> NodeCpu:
    text = text if text is not None else Path("/proc/stat").read_text()
    fields = [int(v) for v in text.splitlines()[0].split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    to_ns = 1_000_000_000 // CLOCK_TICKS_PER_S
    return NodeCpu((user + nice + system + irq + softirq) * to_ns, softirq * to_ns)
