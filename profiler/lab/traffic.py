"""Lab workloads, run inside fake pods as child processes: `python -m profiler.lab.traffic ...`.

    tcp-server --port P [--bind ADDR] [--duration S] [--backlog N]
        accepts any number of connections and reads everything sent to it.
    tcp-client --to IP --port P [--rate N] [--size B] [--duration S]
        one connection, TCP_NODELAY, N writes of B bytes per second, evenly paced; then it
        half-closes and waits for the server to have read everything (its summary says
        `delivered`).

Pacing is the point of the client (design §8): unpaced bulk TCP over veth produces hundreds
of retransmits even with no loss at all, which would drown the loss a scenario injects.

Every workload stops by itself after --duration (capped at MAX_WORKLOAD_S so a forgotten
process cannot run for ever) and on SIGTERM/SIGINT, and prints JSON lines on stdout: a
`listening` event when a server is ready, then one `summary` line with what it moved.

Standard library only and nothing imported at module level beyond it (and workload_common,
which is the same): this starts once per pod, often several at the same instant.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any

from profiler.lab.workload_common import MAX_WORKLOAD_S, StopFlag, duration_type, emit

DEFAULT_SERVER_DURATION_S = 60.0
# A write blocked longer than this is given up on when the run must end, so a peer that
# stopped reading cannot hold the client past its duration.
SEND_POLL_S = 0.2
# How long a client waits, after its last write, for the server to have read everything.
# Data written to a lossy path can still be in flight (a retransmit waits out its RTO, and
# a lost retransmit doubles it), so closing at once and stopping the server a moment later
# would lose the tail; waiting for the server's EOF makes "sent" mean "received".
FLUSH_TIMEOUT_S = 10.0

_stop = StopFlag()
_duration = duration_type(MAX_WORKLOAD_S)


def run_server(port: int, bind: str, duration_s: float, backlog: int) -> int:
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((bind, port))
    listener.listen(backlog)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, data=None)
    emit({"event": "listening", "role": "tcp-server", "bind": bind, "port": port})

    start = time.monotonic()
    deadline = start + duration_s
    received = 0
    accepted = 0
    buffer = bytearray(1 << 16)
    try:
        while not _stop.requested:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for key, _ in selector.select(timeout=min(remaining, SEND_POLL_S)):
                sock: socket.socket = key.fileobj  # type: ignore[assignment]
                if key.data is None:
                    try:
                        conn, _addr = sock.accept()
                    except BlockingIOError:
                        continue
                    conn.setblocking(False)
                    selector.register(conn, selectors.EVENT_READ, data="conn")
                    accepted += 1
                    continue
                try:
                    count = sock.recv_into(buffer)
                except BlockingIOError:
                    continue
                except ConnectionError:
                    count = 0
                if count:
                    received += count
                else:
                    selector.unregister(sock)
                    sock.close()
    finally:
        for key in list(selector.get_map().values()):
            key.fileobj.close()  # type: ignore[union-attr]
        selector.close()
    emit({
        "event": "summary", "role": "tcp-server", "port": port, "bytes": received,
        "connections": accepted, "elapsed_s": round(time.monotonic() - start, 3),
        "stopped_by_signal": _stop.requested,
    })
    return 0


def _connect(host: str, port: int, timeout_s: float) -> socket.socket | None:
    # Retried because the server is usually started a moment earlier in another pod and may
    # not be listening yet; a refused connect costs nothing on a local bridge.
    deadline = time.monotonic() + timeout_s
    while not _stop.requested:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(max(0.05, min(1.0, deadline - time.monotonic())))
        try:
            sock.connect((host, port))
            return sock
        except OSError:
            sock.close()
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)
    return None


def _send_paced_write(sock: socket.socket, payload: memoryview, give_up_at: float) -> int:
    sent = 0
    while sent < len(payload):
        try:
            sent += sock.send(payload[sent:])
        except TimeoutError:
            if _stop.requested or time.monotonic() >= give_up_at:
                break
    return sent


def _wait_until_read(sock: socket.socket) -> bool:
    """Half-close and wait for the server's EOF: it closes only after reading our FIN, which
    comes after every byte we sent. False when it did not come in time (or we were told to stop)."""
    sock.shutdown(socket.SHUT_WR)
    give_up_at = time.monotonic() + FLUSH_TIMEOUT_S
    while not _stop.requested and time.monotonic() < give_up_at:
        try:
            if not sock.recv(4096):
                return True
        except TimeoutError:
            continue
        except ConnectionError:
            return False
    return False


def run_client(host: str, port: int, rate: float, size: int, duration_s: float, connect_timeout_s: float) -> int:
    sock = _connect(host, port, connect_timeout_s)
    if sock is None:
        emit({"event": "summary", "role": "tcp-client", "to": f"{host}:{port}", "connected": False,
              "bytes": 0, "writes": 0, "stopped_by_signal": _stop.requested})
        return 2
    sock.settimeout(SEND_POLL_S)
    payload = memoryview(b"x" * size)
    interval = 1.0 / rate
    start = time.monotonic()
    deadline = start + duration_s
    next_write = start
    sent_bytes = 0
    writes = 0
    skipped = 0
    try:
        while not _stop.requested:
            now = time.monotonic()
            if now >= deadline:
                break
            if now < next_write:
                time.sleep(min(next_write - now, 0.1))
                continue
            sent_bytes += _send_paced_write(sock, payload, deadline)
            writes += 1
            next_write += interval
            # Fell far behind (a stalled socket, a descheduled process): skip the missed
            # writes instead of bursting them, since a burst is exactly what pacing avoids.
            behind = time.monotonic() - next_write
            if behind > 0.1:
                missed = int(behind / interval)
                skipped += missed
                next_write += missed * interval
        delivered = _wait_until_read(sock)
    except OSError as exc:
        delivered = False
        emit({"event": "error", "role": "tcp-client", "error": str(exc)})
    finally:
        sock.close()
    emit({
        "event": "summary", "role": "tcp-client", "to": f"{host}:{port}", "connected": True,
        "bytes": sent_bytes, "writes": writes, "skipped_writes": skipped, "delivered": delivered,
        "elapsed_s": round(time.monotonic() - start, 3), "stopped_by_signal": _stop.requested,
    })
    return 0


def server_argv(port: int, duration_s: float, bind: str = "0.0.0.0", backlog: int = 128) -> list[str]:
    """argv starting a server with the current interpreter (the venv's, when run from one)."""
    return [sys.executable, "-m", "profiler.lab.traffic", "tcp-server", "--port", str(port),
            "--bind", bind, "--duration", f"{duration_s:g}", "--backlog", str(backlog)]


def client_argv(to: str, port: int, rate: float, size: int, duration_s: float) -> list[str]:
    return [sys.executable, "-m", "profiler.lab.traffic", "tcp-client", "--to", to,
            "--port", str(port), "--rate", f"{rate:g}", "--size", str(size),
            "--duration", f"{duration_s:g}"]


def parse_output(stdout: str) -> list[dict[str, Any]]:
    """The JSON records a workload printed (non-JSON lines are ignored)."""
    records = []
    for line in stdout.splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m profiler.lab.traffic",
                                     description="Workloads for netprof lab pods.")
    sub = parser.add_subparsers(dest="mode", required=True)
    server = sub.add_parser("tcp-server", help="accept connections and read everything")
    server.add_argument("--port", type=int, required=True)
    server.add_argument("--bind", default="0.0.0.0")
    server.add_argument("--duration", type=_duration, default=DEFAULT_SERVER_DURATION_S,
                        help=f"seconds before exiting (default {DEFAULT_SERVER_DURATION_S:g})")
    server.add_argument("--backlog", type=int, default=128, help="listen(2) backlog")
    client = sub.add_parser("tcp-client", help="one connection, paced writes")
    client.add_argument("--to", required=True, help="server IPv4 address")
    client.add_argument("--port", type=int, required=True)
    client.add_argument("--rate", type=float, default=1000.0, help="writes per second (default 1000)")
    client.add_argument("--size", type=int, default=1000, help="bytes per write (default 1000)")
    client.add_argument("--duration", type=_duration, default=3.0, help="seconds (default 3)")
    client.add_argument("--connect-timeout", type=float, default=5.0,
                        help="seconds to keep retrying the connect (default 5)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _stop.install_handlers()
    if args.mode == "tcp-server":
        return run_server(args.port, args.bind, args.duration, args.backlog)
    if args.rate <= 0 or args.size <= 0:
        print("--rate and --size must be positive", file=sys.stderr)
        return 2
    return run_client(args.to, args.port, args.rate, args.size, args.duration, args.connect_timeout)


if __name__ == "__main__":
    sys.exit(main())
