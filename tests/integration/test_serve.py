"""`netprof serve` as an operator runs it: the real command on an ephemeral loopback port,
scraped over HTTP while a lab pod drops packets, then stopped with SIGTERM."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.serve_clients import StderrLog

from profiler.lab.scenario_drops import RcvbufDropScenario
from tests.export_readers import read_prometheus, sample_value

pytestmark = pytest.mark.usefixtures("bpf_ready", "lab_ready")

REPO = Path(__file__).resolve().parents[2]
SERVING = re.compile(r"serving metrics on http://127\.0\.0\.1:(\d+)/metrics")


class ServeProcess:
    """`netprof serve` in a subprocess; its stderr lines collected on a thread."""

    def __init__(self, textfile: Path, tier: str = "full", interval_s: float = 0.3):
        self.proc = subprocess.Popen(
            # The full tier pinned by default: these tests read every family, softirq and NAPI
            # included, whatever the scenario's figures (serve's default `auto` starts quiet).
            [sys.executable, "-m", "profiler.cli", "serve", "--listen", "127.0.0.1:0", "--interval", f"{interval_s:g}",
             "--textfile", str(textfile), "--tier", tier],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True)
        self.log = StderrLog(self.proc)
        self.lines = self.log.lines
        self.wait_for = self.log.wait_for

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        return response.read().decode()


def listening_addresses(pid: int, port: int) -> set[str]:
    """Local addresses the process listens on for this port, from its /proc/<pid>/net/tcp*."""
    found = set()
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.rsplit(":", 1)
            if state == "0A" and int(port_hex, 16) == port:
                found.add(address)
    return found


def test_serve_exposes_live_counters_and_stops_cleanly(tmp_path):
    textfile = tmp_path / "netprof.prom"
    serve = ServeProcess(textfile)
    try:
        port = int(serve.wait_for(SERVING).group(1))
        serve.wait_for("sampling every")
        # Bound exactly where --listen said: IPv4 loopback, nothing else.
        assert listening_addresses(serve.proc.pid, port) == {"0100007F"}
        before = read_prometheus(scrape(port))
        assert sample_value(before, "netprof_probe_attached", probe="skb_drops") == 1
        assert "process_cpu_seconds" in before, "the HTTP endpoint also has netprof's own process metrics"

        with RcvbufDropScenario(pings=0) as scenario:
            scenario.start(1.0)
            result = scenario.wait()
            receiver = str(scenario.lab.pods["receiver"].netns_inode)
            kernel = result.counter_by_pod("Udp.RcvbufErrors")["receiver"]
            # Counters reach the kernel's own count within a few intervals, and a scrape
            # never sees a counter go down.
            seen: list[float] = []
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                families = read_prometheus(scrape(port))
                try:
                    seen.append(sample_value(families, "netprof_drops_total", netns=receiver, reason="SOCKET_RCVBUFF"))
                except AssertionError:
                    seen.append(0.0)
                if seen[-1] >= kernel:
                    break
                time.sleep(0.2)
        assert kernel > 900 and seen[-1] == kernel, (kernel, seen)
        assert seen == sorted(seen), seen
        sender = [s for s in families["netprof_drops"]
                  if s.labels["reason"] == "SOCKET_RCVBUFF" and s.labels["pod"].endswith("-sender")]
        assert not sender or all(s.value == 0 for s in sender)
        runs = [s.value for s in families["netprof_softirq_runs"] if s.labels["vector"] == "NET_RX"]
        assert runs and sum(runs) > 0
        buckets = [s for s in families["netprof_softirq_latency_seconds"] if s.name.endswith("_bucket")]
        assert buckets and {s.labels["cpu"] for s in buckets} >= {"0"}

        # The textfile: the same metrics for node_exporter, without process_* (it has its own).
        textfile_families = read_prometheus(textfile.read_text())
        assert "netprof_drops" in textfile_families and "process_cpu_seconds" not in textfile_families
        # Group-readable for node_exporter's user, nobody else (profiler/serve.py says why).
        assert oct(textfile.stat().st_mode & 0o777) == "0o640"

        serve.proc.send_signal(signal.SIGTERM)
        assert serve.proc.wait(timeout=15) == 0, serve.lines[-20:]
        serve.wait_for("stopped; probes detached", timeout_s=5)
        assert not textfile.exists(), "no stale numbers left for node_exporter"
        assert not [p for p in tmp_path.iterdir()], "no temporary files left"
    finally:
        serve.stop()


def test_serve_refuses_a_port_in_use_in_one_line(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "profiler.cli", "serve", "--listen", f"127.0.0.1:{port}"],
                                cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True,
                                text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and f"cannot listen on 127.0.0.1:{port}" in result.stderr
