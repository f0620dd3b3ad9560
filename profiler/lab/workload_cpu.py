"""CPU-bound network workloads for lab pods: `python -m profiler.lab.workload_cpu ...`.

    udp-sink --port P [--cpu N] [--duration S]
        binds 0.0.0.0:P and reads every datagram until the duration ends.
    udp-blast --to IP --port P --cpu N [--size B] [--duration S]
        sends datagrams as fast as one pinned thread can, for the duration.

Pinning is the point: the sender's CPU is where its transmit path, and the receive path of
a veth without RPS, run as NET_RX softirq (design §8), so a scenario knows which CPU it
loads. Both stop by themselves after --duration (capped) or on SIGTERM/SIGINT, and print
JSON lines like profiler.lab.traffic: `listening` when ready, then one `summary`.

Standard library only: this starts inside fake pods.
"""
from __future__ import annotations

import argparse
import errno
import os
import socket
import sys
import time
from collections.abc import Sequence

from profiler.lab.workload_common import MAX_WORKLOAD_S, StopFlag, duration_type, emit

RECEIVE_POLL_S = 0.2
# A datagram larger than the veth MTU would be fragmented: keep one datagram one packet.
MAX_DATAGRAM = 1472

_stop = StopFlag()
_duration = duration_type(MAX_WORKLOAD_S)


def pin_to_cpu(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def run_sink(port: int, duration_s: float) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    sock.settimeout(RECEIVE_POLL_S)
    emit({"event": "listening", "role": "udp-sink", "port": port, "cpu": sorted(os.sched_getaffinity(0))})
    buffer = bytearray(65536)
    datagrams = 0
    received = 0
    start = time.monotonic()
    deadline = start + duration_s
    try:
        while not _stop.requested and time.monotonic() < deadline:
            try:
                received += sock.recv_into(buffer)
                datagrams += 1
            except TimeoutError:
                continue
    finally:
        sock.close()
    emit({"event": "summary", "role": "udp-sink", "port": port, "datagrams": datagrams,
          "bytes": received, "elapsed_s": round(time.monotonic() - start, 3),
          "stopped_by_signal": _stop.requested})
    return 0


def run_blast(host: str, port: int, size: int, duration_s: float) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((host, port))
    payload = b"x" * size
    sent = 0
    refused = 0
    no_buffer = 0
    start = time.monotonic()
    deadline = start + duration_s
    try:
        while not _stop.requested:
            # Checking the clock every datagram would cost as much as sending one.
            for _ in range(256):
                try:
                    sock.send(payload)
                    sent += 1
                except ConnectionRefusedError:
                    refused += 1  # an ICMP port unreachable from before the sink was bound
                except OSError as exc:
                    if exc.errno != errno.ENOBUFS:
                        raise
                    no_buffer += 1
            if time.monotonic() >= deadline:
                break
    finally:
        sock.close()
    emit({"event": "summary", "role": "udp-blast", "to": f"{host}:{port}", "datagrams": sent,
          "bytes": sent * size, "refused": refused, "no_buffer": no_buffer,
          "cpu": sorted(os.sched_getaffinity(0)), "elapsed_s": round(time.monotonic() - start, 3),
          "stopped_by_signal": _stop.requested})
    return 0


def sink_argv(port: int, duration_s: float, cpu: int | None = None) -> list[str]:
    """argv starting a sink with the current interpreter (the venv's, when run from one)."""
    argv = [sys.executable, "-m", "profiler.lab.workload_cpu", "udp-sink", "--port", str(port),
            "--duration", f"{duration_s:g}"]
    return argv + (["--cpu", str(cpu)] if cpu is not None else [])


def blast_argv(to: str, port: int, cpu: int, size: int, duration_s: float) -> list[str]:
    return [sys.executable, "-m", "profiler.lab.workload_cpu", "udp-blast", "--to", to,
            "--port", str(port), "--cpu", str(cpu), "--size", str(size),
            "--duration", f"{duration_s:g}"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m profiler.lab.workload_cpu",
                                     description="CPU-pinned UDP workloads for netprof lab pods.")
    sub = parser.add_subparsers(dest="mode", required=True)
    sink = sub.add_parser("udp-sink", help="read every datagram sent to a port")
    sink.add_argument("--port", type=int, required=True)
    sink.add_argument("--cpu", type=int, help="pin to this CPU")
    sink.add_argument("--duration", type=_duration, default=60.0)
    blast = sub.add_parser("udp-blast", help="send datagrams as fast as possible from one CPU")
    blast.add_argument("--to", required=True, help="sink IPv4 address")
    blast.add_argument("--port", type=int, required=True)
    blast.add_argument("--cpu", type=int, required=True, help="pin to this CPU")
    blast.add_argument("--size", type=int, default=64, help=f"payload bytes (1..{MAX_DATAGRAM})")
    blast.add_argument("--duration", type=_duration, default=3.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _stop.install_handlers()
    try:
        pin_to_cpu(args.cpu)
    except OSError as exc:
        print(f"cannot pin to CPU {args.cpu}: {exc.strerror}", file=sys.stderr)
        return 2
    if args.mode == "udp-sink":
        return run_sink(args.port, args.duration)
    if not 0 < args.size <= MAX_DATAGRAM:
        print(f"--size must be within 1..{MAX_DATAGRAM}", file=sys.stderr)
        return 2
    return run_blast(args.to, args.port, args.size, args.duration)


if __name__ == "__main__":
    sys.exit(main())
