"""Listen-queue workloads, run inside fake pods: `python -m profiler.lab.workload_listen ...`.

    listen-server --port P --backlog N [--accept] [--duration S]
        listen(2) with backlog N; never accepts unless --accept (then accepts and closes
        each connection at once, a server that keeps up).
    connect-flood --to IP --port P --count N --rate R [--duration S]
        N non-blocking connects, R per second, every socket held open until the end so the
        kernel keeps retransmitting the SYNs a full queue refused; then closed with a reset,
        so nothing of the flood reaches the server after the workload ended.
    connect-fill --to IP --port P --count N [--duration S]
        N connects, each waited for (a full three-way handshake), then held: fills a
        server's accept queue to exactly N.

Every workload ends by itself after --duration (capped at MAX_WORKLOAD_S) or on
SIGTERM/SIGINT and prints JSON lines: a first `ready` record (a server listens, a flood has
fired everything, a fill is complete), then one `summary`. Standard library only.
"""
from __future__ import annotations

import argparse
import errno
import os
import select
import socket
import struct
import sys
import time
from collections.abc import Sequence

from profiler.lab.workload_common import MAX_WORKLOAD_S, StopFlag, duration_type, emit

MAX_CONNECTIONS = 900   # stays under the usual 1024 open-files limit
POLL_S = 0.05

_stop = StopFlag()
_duration = duration_type(MAX_WORKLOAD_S)


def _sleep_until(deadline: float) -> None:
    while not _stop.requested:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        time.sleep(min(remaining, POLL_S))


def run_listen_server(port: int, bind: str, backlog: int, accept: bool, duration_s: float) -> int:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((bind, port))
    listener.listen(backlog)
    listener.setblocking(False)
    emit({"event": "ready", "role": "listen-server", "port": port, "backlog": backlog,
          "pid": os.getpid(), "fd": listener.fileno()})
    deadline = time.monotonic() + duration_s
    accepted = 0
    try:
        while not _stop.requested and time.monotonic() < deadline:
            if not accept:
                time.sleep(POLL_S)
                continue
            readable, _, _ = select.select([listener], [], [], POLL_S)
            if not readable:
                continue
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                continue
            conn.close()
            accepted += 1
    finally:
        listener.close()
    emit({"event": "summary", "role": "listen-server", "port": port, "backlog": backlog,
          "accepted": accepted, "stopped_by_signal": _stop.requested})
    return 0


def _established(sock: socket.socket) -> bool:
    try:
        sock.getpeername()
        return True
    except OSError:
        return False


def run_connect_flood(host: str, port: int, count: int, rate: float, duration_s: float) -> int:
    start = time.monotonic()
    deadline = start + duration_s
    interval = 1.0 / rate
    sockets: list[socket.socket] = []
    failed = 0
    try:
        for index in range(count):
            if _stop.requested or time.monotonic() >= deadline:
                break
            _sleep_until(start + index * interval)
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # Close with RST, not FIN: a half-open handshake the server still holds would
            # otherwise answer the FIN by trying (and failing) to queue the connection once
            # more, overflowing after the workload ended.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.setblocking(False)
            error = sock.connect_ex((host, port))
            if error not in (0, errno.EINPROGRESS):
                failed += 1
                sock.close()
                continue
            sockets.append(sock)
        emit({"event": "ready", "role": "connect-flood", "fired": len(sockets), "failed": failed})
        _sleep_until(deadline)
        established = sum(_established(sock) for sock in sockets)
    finally:
        for sock in sockets:
            sock.close()
    emit({"event": "summary", "role": "connect-flood", "to": f"{host}:{port}", "fired": len(sockets),
          "failed": failed, "established": established, "stopped_by_signal": _stop.requested})
    return 0


def run_connect_fill(host: str, port: int, count: int, duration_s: float, connect_timeout_s: float) -> int:
    deadline = time.monotonic() + duration_s
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            if _stop.requested:
                break
            sock = socket.create_connection((host, port), timeout=connect_timeout_s)
            sockets.append(sock)
        emit({"event": "ready", "role": "connect-fill", "connected": len(sockets)})
        _sleep_until(deadline)
    finally:
        for sock in sockets:
            sock.close()
    emit({"event": "summary", "role": "connect-fill", "to": f"{host}:{port}", "connected": len(sockets),
          "stopped_by_signal": _stop.requested})
    return 0


def _connections(value: str) -> int:
    count = int(value)
    if not 0 < count <= MAX_CONNECTIONS:
        raise argparse.ArgumentTypeError(f"count must be within 1..{MAX_CONNECTIONS}")
    return count


def listen_server_argv(port: int, backlog: int, duration_s: float, accept: bool = False,
                       bind: str = "0.0.0.0") -> list[str]:
    return [sys.executable, "-m", "profiler.lab.workload_listen", "listen-server", "--port", str(port),
            "--bind", bind, "--backlog", str(backlog), "--duration", f"{duration_s:g}",
            *(["--accept"] if accept else [])]


def connect_flood_argv(to: str, port: int, count: int, rate: float, duration_s: float) -> list[str]:
    return [sys.executable, "-m", "profiler.lab.workload_listen", "connect-flood", "--to", to,
            "--port", str(port), "--count", str(count), "--rate", f"{rate:g}",
            "--duration", f"{duration_s:g}"]


def connect_fill_argv(to: str, port: int, count: int, duration_s: float) -> list[str]:
    return [sys.executable, "-m", "profiler.lab.workload_listen", "connect-fill", "--to", to,
            "--port", str(port), "--count", str(count), "--duration", f"{duration_s:g}"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m profiler.lab.workload_listen",
                                     description="Listen-queue workloads for netprof lab pods.")
    sub = parser.add_subparsers(dest="mode", required=True)
    server = sub.add_parser("listen-server", help="listen(2) and (by default) never accept")
    server.add_argument("--port", type=int, required=True)
    server.add_argument("--bind", default="0.0.0.0")
    server.add_argument("--backlog", type=int, required=True, help="listen(2) backlog")
    server.add_argument("--accept", action="store_true", help="accept and close every connection")
    server.add_argument("--duration", type=_duration, default=30.0)
    flood = sub.add_parser("connect-flood", help="many non-blocking connects, held open")
    flood.add_argument("--to", required=True)
    flood.add_argument("--port", type=int, required=True)
    flood.add_argument("--count", type=_connections, required=True)
    flood.add_argument("--rate", type=float, default=200.0, help="connects per second")
    flood.add_argument("--duration", type=_duration, default=3.0)
    fill = sub.add_parser("connect-fill", help="N completed connects, held open")
    fill.add_argument("--to", required=True)
    fill.add_argument("--port", type=int, required=True)
    fill.add_argument("--count", type=_connections, required=True)
    fill.add_argument("--duration", type=_duration, default=5.0)
    fill.add_argument("--connect-timeout", type=float, default=2.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _stop.install_handlers()
    if args.mode == "listen-server":
        return run_listen_server(args.port, args.bind, args.backlog, args.accept, args.duration)
    if args.mode == "connect-flood":
        if args.rate <= 0:
            print("--rate must be positive", file=sys.stderr)
            return 2
        return run_connect_flood(args.to, args.port, args.count, args.rate, args.duration)
    return run_connect_fill(args.to, args.port, args.count, args.duration, args.connect_timeout)


if __name__ == "__main__":
    sys.exit(main())
