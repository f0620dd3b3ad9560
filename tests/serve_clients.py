"""Test-side tools for `netprof serve`: its stderr followed on a thread, and a burst of
/metrics clients. Loopback only; every loop is bounded by a deadline."""
from __future__ import annotations

import re
import selectors
import socket
import subprocess
import threading
import time

from profiler.lab.scenarios import lab_time_scale


class StderrLog:
    """The lines a `netprof serve` subprocess writes on stderr, collected on a thread."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, pattern: re.Pattern | str, timeout_s: float | None = None) -> re.Match:
        # 60 s by default, stretched under software emulation: there serve's BCC compile
        # alone, between "serving metrics" and "sampling every", took more than 60 s (trixie).
        deadline = time.monotonic() + (60 * lab_time_scale() if timeout_s is None else timeout_s)
        while time.monotonic() < deadline:
            for line in list(self.lines):
                found = re.search(pattern, line)
                if found:
                    return found
            if self.proc.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} from netprof serve; it said: {self.lines[-20:]}")


def burst(port: int, count: int, timeout_s: float) -> int:
    """`count` clients connect at once (the listen backlog holds them), then each asks for
    /metrics; how many got a 200 within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    selector = selectors.DefaultSelector()
    pending: dict[socket.socket, bytearray] = {}
    answered = 0
    try:
        for _ in range(count):
            client = socket.socket()
            client.setblocking(False)
            client.connect_ex(("127.0.0.1", port))
            pending[client] = bytearray()
            selector.register(client, selectors.EVENT_WRITE)
        while pending and time.monotonic() < deadline:
            for key, events in selector.select(timeout=0.5):
                client = key.fileobj
                if events & selectors.EVENT_WRITE:
                    try:
                        client.send(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
                    except OSError:
                        continue  # not connected yet (SYN retried): try again next turn
                    selector.modify(client, selectors.EVENT_READ)
                    continue
                try:
                    chunk = client.recv(1 << 16)
                except BlockingIOError:
                    continue
                except OSError:
                    chunk = b""
                if chunk:
                    pending[client] += chunk
                    continue
                answered += bytes(pending[client][:12]) in (b"HTTP/1.1 200", b"HTTP/1.0 200")
                selector.unregister(client)
                client.close()
                del pending[client]
    finally:
        for client in pending:
            client.close()
        selector.close()
    return answered
