"""Reproducible network problems in fake pods, each with the pod the profiler should blame.

A scenario has the same shape whatever it breaks:

    with RetransmitScenario() as scenario:      # lab up + faults/sysctls in place
        ...attach the profiler, read scenario.lab.pods[...].netns_inode...
        scenario.start(duration_s=3)             # workloads start
        result = scenario.wait()                 # workloads finish; counters collected
    # leaving the block stops every workload and removes the lab, even on an exception

New scenarios (listen overflow, conntrack full, receive-buffer drops, ...) subclass
`Scenario`, set `name`, `pod_names` and `expected_pod`, and implement `prepare()` (faults
and sysctls, before any traffic) and `launch()` (workloads, via `self.spawn`).
"""

from __future__ import annotations

import os
import selectors
import subprocess
import time
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar

from profiler.lab import LabError
from profiler.lab import traffic
from profiler.lab.faults import FaultCounter, fault_counters, inject_loss
from profiler.lab.topology import Lab, sigint_deferred
from profiler.lab.workload_common import GRACE_S, MAX_RUN_S

# After the foreground workloads end, servers get this long to read what is still in flight
# (a segment lost just before the client closed is retransmitted after ≥200 ms RTO).
DRAIN_S = 0.5


def lab_time_scale(environ: dict[str, str] | None = None) -> float:
    """How much slower than this machine the lab runs: NETPROF_LAB_TIME_SCALE (≥ 1), set by
    tests/kernels for guests under software emulation (5–10× slower). It stretches only the
    limits on how long a workload may take to start or finish, never what is measured."""
    raw = (os.environ if environ is None else environ).get("NETPROF_LAB_TIME_SCALE", "1")
    try:
        return max(1.0, float(raw))
    except ValueError:
        return 1.0


READY_TIMEOUT_S = 5.0 * lab_time_scale()


@dataclass(frozen=True)
class WorkloadResult:
    pod: str
    role: str                       # "server", "client", ...
    returncode: int | None
    summary: dict[str, Any]         # the workload's `summary` JSON record ({} if it printed none)
    stderr: str


@dataclass(frozen=True)
class ScenarioResult:
    scenario: str
    prefix: str
    expected_pod: str | None
    duration_s: float
    workloads: list[WorkloadResult]
    faults: list[FaultCounter]                        # packets each injected fault dropped
    # Per-pod deltas of the namespace's own SNMP counters over the run ("Tcp.RetransSegs", ...):
    # the kernel's ground truth to check the profiler's per-pod attribution against.
    counter_deltas: dict[str, dict[str, int]] = field(default_factory=dict)

    def counter_by_pod(self, name: str) -> dict[str, int]:
        return {pod: deltas.get(name, 0) for pod, deltas in self.counter_deltas.items()}

    @property
    def retransmits_by_pod(self) -> dict[str, int]:
        # RetransSegs counts segments; the tcp_retransmit_skb tracepoint counts skbs. With
        # 1000-byte paced writes one skb is one segment, so the two agree in this lab.
        return self.counter_by_pod("Tcp.RetransSegs")


@dataclass
class _Workload:
    pod: str
    role: str
    proc: subprocess.Popen[str]
    background: bool                # runs until told to stop (servers)


class ScenarioUnavailable(LabError):
    """This machine cannot run the scenario (no compiler, one CPU, ...); the message says why."""


class Scenario:
    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    pod_names: ClassVar[tuple[str, ...]] = ()
    expected_pod: ClassVar[str | None] = None

    def __init__(self, prefix: str | None = None) -> None:
        self._prefix = prefix
        self.lab: Lab | None = None
        self.result: ScenarioResult | None = None
        self._workloads: list[_Workload] = []
        self._duration_s = 0.0
        self._baseline: dict[str, dict[str, int]] = {}

    # -- to implement --------------------------------------------------------------

    def prepare(self, lab: Lab) -> None:
        """Put faults and sysctls in place; runs once, right after the lab comes up."""

    def launch(self, lab: Lab, duration_s: float) -> None:
        """Start the workloads with `self.spawn`; they must end by themselves after `duration_s`."""
        raise NotImplementedError

    # -- lifecycle -----------------------------------------------------------------

    def setup(self) -> Lab:
        if self.lab is None:
            lab = Lab.up(self.pod_names, prefix=self._prefix)
            try:
                self.prepare(lab)
            except BaseException:
                lab.down()
                raise
            self.lab = lab
        return self.lab

    def start(self, duration_s: float) -> None:
        if not 0 < duration_s <= MAX_RUN_S:
            raise LabError(f"duration must be within (0, {MAX_RUN_S:g}] seconds, got {duration_s:g}")
        if any(w.proc.poll() is None for w in self._workloads):
            raise LabError(f"scenario {self.name} is already running")
        lab = self.setup()
        self._workloads = []
        self.result = None
        self._duration_s = duration_s
        self._baseline = {pod: lab.snmp_counters(pod) for pod in lab.pods}
        try:
            self.launch(lab, duration_s)
        except BaseException:
            self.stop()
            raise

    def spawn(self, pod: str, role: str, argv: list[str], background: bool = False) -> subprocess.Popen[str]:
        assert self.lab is not None
        proc = self.lab.popen(pod, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self._workloads.append(_Workload(pod, role, proc, background))
        return proc

    def wait_ready(self, proc: subprocess.Popen[str], timeout_s: float = READY_TIMEOUT_S) -> dict[str, Any]:
        """Block until a server printed its `listening` record, so clients never race it."""
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        line = b""
        deadline = time.monotonic() + timeout_s
        # Byte by byte straight from the fd: reading through the text wrapper would buffer
        # past the newline and `communicate()` (which reads the fd directly) would lose it.
        while not line.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise LabError(f"workload {proc.args!r} not ready after {timeout_s:g}s")
            # poll/epoll, not select(): a process holding many BPF fds has fd numbers past
            # FD_SETSIZE (1024), where select() fails with "filedescriptor out of range".
            with selectors.DefaultSelector() as selector:
                selector.register(fd, selectors.EVENT_READ)
                readable = selector.select(remaining)
            if not readable:
                continue
            chunk = os.read(fd, 1)
            if not chunk:
                stderr = proc.stderr.read() if proc.stderr else ""
                raise LabError(f"workload exited before it was ready (exit {proc.wait()}): "
                               + " | ".join(stderr.strip().splitlines()))
            line += chunk
        records = traffic.parse_output(line.decode())
        return records[0] if records else {}

    def finished(self) -> bool:
        """Every workload that is not a background server has exited (none started: False)."""
        foreground = [w for w in self._workloads if not w.background]
        return bool(foreground) and all(w.proc.poll() is not None for w in foreground)

    def wait(self, timeout_s: float | None = None) -> ScenarioResult:
        """Wait for the workloads to finish, stop the servers, and collect what happened."""
        if self.lab is None or not self._workloads:
            raise LabError(f"scenario {self.name} was not started")
        lab = self.lab
        deadline = time.monotonic() + (timeout_s if timeout_s is not None
                                       else self._duration_s + 15 * lab_time_scale())
        outputs: dict[int, tuple[str, str]] = {}
        for workload in self._workloads:
            if workload.background:
                continue
            try:
                outputs[id(workload)] = workload.proc.communicate(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.stop()
                raise LabError(f"{workload.role} in pod {workload.pod} did not finish in time") from None
        time.sleep(DRAIN_S)
        for workload in self._workloads:
            if workload.background:
                if workload.proc.poll() is None:
                    workload.proc.terminate()
                try:
                    outputs[id(workload)] = workload.proc.communicate(timeout=5)
                except subprocess.TimeoutExpired:
                    workload.proc.kill()
                    outputs[id(workload)] = workload.proc.communicate()
        results = []
        for workload in self._workloads:
            stdout, stderr = outputs[id(workload)]
            summaries = [r for r in traffic.parse_output(stdout) if r.get("event") == "summary"]
            results.append(WorkloadResult(
                pod=workload.pod, role=workload.role, returncode=workload.proc.returncode,
                summary=summaries[-1] if summaries else {}, stderr=stderr.strip(),
            ))
        deltas = {}
        for pod in lab.pods:
            after = lab.snmp_counters(pod)
            before = self._baseline.get(pod, {})
            deltas[pod] = {name: value - before.get(name, 0) for name, value in after.items()}
        self.result = ScenarioResult(
            scenario=self.name, prefix=lab.prefix, expected_pod=self.expected_pod,
            duration_s=self._duration_s, workloads=results, faults=fault_counters(lab),
            counter_deltas=deltas,
        )
        return self.result

    def stop(self) -> None:
        """Terminate every workload still running (idempotent)."""
        running = [w.proc for w in self._workloads if w.proc.poll() is None]
        for proc in running:
            proc.terminate()
        for proc in running:
            try:
                proc.communicate(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()

    def close(self) -> None:
        """Stop the workloads and remove the lab (idempotent)."""
        with sigint_deferred():
            try:
                self.stop()
            finally:
                if self.lab is not None:
                    self.lab.down()
                    self.lab = None

    def __enter__(self) -> Scenario:
        self.setup()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class RetransmitScenario(Scenario):
    name = "retransmits"
    description = (
        "Three pods send paced TCP to one server; 5% of the packets from `lossy` toward the "
        "server port are dropped on the bridge, so `lossy` (and only it) retransmits."
    )
    pod_names = ("server", "lossy", "steady1", "steady2")
    expected_pod = "lossy"

    def __init__(self, prefix: str | None = None, loss_percent: float = 5.0, port: int = 5201,
                 rate: float = 1000.0, size: int = 1000) -> None:
        super().__init__(prefix)
        self.loss_percent = loss_percent
        self.port = port
        self.rate = rate
        self.size = size

    def prepare(self, lab: Lab) -> None:
        inject_loss(lab, "lossy", self.loss_percent, port=self.port)

    def launch(self, lab: Lab, duration_s: float) -> None:
        # The server's own bound is a safety net only; wait() stops it once clients are done.
        server = self.spawn("server", "server",
                            traffic.server_argv(self.port, duration_s + GRACE_S), background=True)
        self.wait_ready(server)
        server_ip = lab.pods["server"].ip
        for pod in ("lossy", "steady1", "steady2"):
            self.spawn(pod, "client", traffic.client_argv(server_ip, self.port, self.rate,
                                                          self.size, duration_s))


SCENARIOS: dict[str, type[Scenario]] = {
    RetransmitScenario.name: RetransmitScenario,
}
