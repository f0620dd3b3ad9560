"""`netprof serve` keeps serving (issue 12, item 6): through textfile write errors (a full
tmpfs, a folder replaced by a file, a read-only mount at start), a slow-client flood and a
1,000-connection burst — and a real Prometheus server (Debian's `prometheus`, run here on
loopback with its own config and storage, never the packaged service) keeps scraping it.

Loopback only; every loop has a deadline; every process, mount and socket is cleaned up.
"""
from __future__ import annotations

import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
from contextlib import ExitStack, contextmanager
from collections.abc import Iterator
from pathlib import Path

import pytest

from profiler.lab.scenarios import lab_time_scale
from tests.conftest import skip_or_fail
from tests.export_readers import read_prometheus
from tests.serve_clients import StderrLog, burst

# In a guest under software emulation (NETPROF_LAB_TIME_SCALE=10) everything, Prometheus
# included, runs 5-10x slower: the Prometheus flood test's clocks stretch (at most 4x for the
# scrape interval: 10 scrapes must still fit in the flood) while every property (each scrape
# answered, up all along) stays.
SLOW = lab_time_scale()
SCRAPE_S = min(SLOW, 4.0)

pytestmark = pytest.mark.usefixtures("bpf_ready")

REPO = Path(__file__).resolve().parents[2]
SERVING = re.compile(r"serving metrics on http://127\.0\.0\.1:(\d+)/metrics")
ERRORS = "netprof_textfile_write_errors_total"


class Serve:
    """`netprof serve` in a subprocess; its stderr lines collected on a thread."""

    def __init__(self, textfile: Path, interval_s: float = 0.3):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "profiler.cli", "serve", "--listen", "127.0.0.1:0",
             "--interval", str(interval_s), "--textfile", str(textfile), "--tier", "full"],
            cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE, text=True)
        self.log = StderrLog(self.proc)
        self.lines = self.log.lines
        self.wait_for = self.log.wait_for
        self.port = int(self.wait_for(SERVING).group(1))
        self.wait_for("sampling every")

    def scrape(self, timeout_s: float = 5) -> tuple[float, dict]:
        started = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=timeout_s) as response:
            assert response.status == 200
            text = response.read().decode()
        return time.monotonic() - started, read_prometheus(text)

    def errors(self) -> float:
        _, families = self.scrape()
        samples = [s for s in families.get("netprof_textfile_write_errors", []) if s.name == ERRORS]
        assert len(samples) == 1, "no textfile error counter on /metrics"
        return samples[0].value

    def wait_for_errors(self, at_least: float, timeout_s: float = 15) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"serve died: {self.lines[-10:]}"
            value = self.errors()
            if value >= at_least:
                return value
            time.sleep(0.2)
        raise AssertionError(f"{ERRORS} stayed below {at_least}; serve said {self.lines[-10:]}")

    def threads(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
        raise AssertionError("no Threads: line")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@contextmanager
def serving(textfile: Path) -> Iterator[Serve]:
    serve = Serve(textfile)
    try:
        yield serve
    finally:
        serve.stop()


@contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    path.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def fill(directory: Path) -> Path:
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 65536):
            pass
    except OSError:  # ENOSPC: full
        pass
    finally:
        os.close(fd)
    return filler


class SlowClients:
    """Connections that send half a request and never finish it, kept at `count` open (the
    server cuts them off after its header timeout; they come back) until stopped."""

    def __init__(self, port: int, count: int):
        self.port, self.count = port, count
        self.opened = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "SlowClients":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        selector = selectors.DefaultSelector()
        try:
            while not self._stop.is_set():
                while len(selector.get_map()) < self.count and not self._stop.is_set():
                    client = socket.create_connection(("127.0.0.1", self.port), timeout=5)
                    client.sendall(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
                    client.setblocking(False)
                    selector.register(client, selectors.EVENT_READ)
                    self.opened += 1
                for key, _ in selector.select(timeout=0.2):  # closed by the server: reopen
                    selector.unregister(key.fileobj)
                    key.fileobj.close()
        finally:
            for key in list(selector.get_map().values()):
                key.fileobj.close()
            selector.close()


def test_textfile_errors_keep_serving_and_keep_the_last_good_file(tmp_path):
    with tmpfs(tmp_path / "disk", "size=2m") as disk:
        folder = disk / "textfiles"
        textfile = folder / "netprof.prom"
        with serving(textfile) as serve:
            serve.wait_for("writing .* every")
            assert serve.errors() == 0
            # 1. The disk fills: the file stays as last written, the counter rises, /metrics answers.
            filler = fill(disk)
            time.sleep(0.5)  # a rewrite already under way when the disk filled may still land
            last_good = textfile.read_text()
            assert "netprof_probe_attached" in read_prometheus(last_good)
            errors = serve.wait_for_errors(3)
            assert textfile.read_text() == last_good
            assert [p.name for p in folder.iterdir()] == ["netprof.prom"], "no half-written temp files"
            assert serve.proc.poll() is None
            # 2. Space comes back: written again.
            filler.unlink()
            deadline = time.monotonic() + 10
            while textfile.read_text() == last_good and time.monotonic() < deadline:
                time.sleep(0.1)
            assert textfile.read_text() != last_good
            serve.wait_for("written again after")
            # 3. The folder is replaced by a file.
            shutil.rmtree(folder)
            folder.write_text("not a folder\n")
            serve.wait_for_errors(errors + 3)
            assert folder.read_text() == "not a folder\n"
            # Logged, but not at every failure (rate-limited).
            failures = [line for line in serve.lines if "write failed" in line]
            assert 1 <= len(failures) <= 2, failures
            assert serve.stop() == 0, serve.lines[-10:]
        assert not any("internal error" in line or "Traceback" in line for line in serve.lines), serve.lines


def test_a_read_only_textfile_folder_at_start_still_serves(tmp_path):
    with tmpfs(tmp_path / "ro", "ro,size=64k") as read_only:
        with serving(read_only / "netprof.prom") as serve:
            assert serve.wait_for_errors(2) >= 2
            assert "Read-only file system" in serve.wait_for("write failed.*").string
            assert serve.stop() == 0, serve.lines[-10:]


def test_slow_clients_and_a_burst_neither_hold_threads_nor_stop_a_scrape(tmp_path):
    if SLOW > 1:
        # Full, serve evicts a client still sending its request after EVICT_AFTER_S of wall
        # clock; a burst client 5-10x slower is such a client (489 of 1000 evicted in the
        # trixie guest): there this would measure the emulator. The host runs it.
        pytest.skip("a wall-clock eviction policy: not testable under software emulation")
    with serving(tmp_path / "netprof.prom") as serve:
        serve.scrape()
        threads_before = serve.threads()
        with SlowClients(serve.port, 200) as slow:
            deadline = time.monotonic() + 10
            while slow.opened < 200 and time.monotonic() < deadline:
                time.sleep(0.05)
            assert slow.opened >= 200
            times = [serve.scrape()[0] for _ in range(5)]
            assert max(times) < 1.0, times
            assert serve.threads() <= threads_before + 2, (threads_before, serve.threads())
        answered = burst(serve.port, 1000, timeout_s=20)
        assert answered == 1000, f"{1000 - answered} of 1000 not answered within 20 s"


# -- a real Prometheus --------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Prometheus:
    def __init__(self, workdir: Path, target_port: int, scrape_interval_s: float = 1.0):
        binary = shutil.which("prometheus")
        if binary is None:
            skip_or_fail("the prometheus binary is not installed (./bootstrap.sh test installs Debian's)")
        self.port = free_port()
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n"
            f"  scrape_interval: {scrape_interval_s:g}s\n"
            f"  scrape_timeout: {scrape_interval_s:g}s\n"
            "scrape_configs:\n"
            "  - job_name: netprof\n"
            f"    static_configs: [{{targets: ['127.0.0.1:{target_port}']}}]\n")
        self.log = (workdir / "prometheus.log").open("w")
        self.proc = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={workdir / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=self.log, stderr=subprocess.STDOUT)

    def api(self, path: str, **params: str) -> dict:
        url = f"http://127.0.0.1:{self.port}{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)

    def query(self, expr: str) -> list[dict]:
        answer = self.api("/api/v1/query", query=expr)
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def wait_ready(self, timeout_s: float = 30) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "prometheus exited at start"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError("prometheus not ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def test_prometheus_keeps_scraping_through_a_full_disk_and_a_slow_client_flood(tmp_path):
    with ExitStack() as stack:
        disk = stack.enter_context(tmpfs(tmp_path / "disk", "size=2m"))
        serve = stack.enter_context(serving(disk / "netprof.prom"))
        prometheus = Prometheus(tmp_path, serve.port, scrape_interval_s=SCRAPE_S)
        stack.callback(prometheus.stop)
        prometheus.wait_ready()
        deadline = time.monotonic() + 30 * SCRAPE_S
        while time.monotonic() < deadline and [r["value"][1] for r in prometheus.query("up")] != ["1"]:
            time.sleep(0.5)
        assert [r["value"][1] for r in prometheus.query("up")] == ["1"]

        fill(disk)
        started = time.time()
        ups: list[str] = []
        errors_seen: list[float] = []
        with SlowClients(serve.port, 200):
            flood_end = time.monotonic() + 15 * SCRAPE_S
            while time.monotonic() < flood_end:
                ups += [r["value"][1] for r in prometheus.query("up")]
                errors_seen += [float(r["value"][1]) for r in prometheus.query(ERRORS)]
                time.sleep(1)
        assert serve.proc.poll() is None, serve.lines[-10:]
        # Prometheus' own record of the window: every scrape succeeded, and the error counter
        # was scraped all along and kept rising.
        window = f"{int(time.time() - started) + 1}s"
        up_samples = prometheus.query(f"up[{window}]")[0]["values"]
        error_samples = prometheus.query(f"{ERRORS}[{window}]")[0]["values"]
        assert len(up_samples) >= 10 and {value for _, value in up_samples} == {"1"}, up_samples
        assert set(ups) == {"1"}, ups
        assert len(error_samples) >= 10, error_samples
        counts = [float(value) for _, value in error_samples]
        assert counts == sorted(counts) and counts[-1] - counts[0] >= 10, counts
        assert errors_seen == sorted(errors_seen) and errors_seen[-1] > 0
        durations = prometheus.query(f"max_over_time(scrape_duration_seconds[{window}])")
        assert float(durations[0]["value"][1]) < 1.0 * SCRAPE_S, durations
