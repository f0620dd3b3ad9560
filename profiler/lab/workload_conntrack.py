"""Conntrack lab workloads, run inside fake pods: `python -m profiler.lab.workload_conntrack ...`.

    udp-burst --to IP --port P --first-source-port N --flows K
        K UDP flows, one datagram each, from source ports N … N+K-1: K new conntrack
        entries in the sender's netns as fast as the kernel takes them. A datagram conntrack
        refuses (table full) fails with EPERM, which is counted, not raised.
    udp-sink --port P [--duration S]
        binds the port and reads everything, so the flows above get no ICMP port-unreachable
        back (which conntrack would track as RELATED and muddle its counters).

Both print JSON lines on stdout: udp-burst a `sent` record the moment the burst is over
(scenarios wait for it to close the window in which a sysctl is lowered) and then a
`summary`; udp-sink a `listening` record when bound, then a `summary`.

Standard library only: this starts once per pod.
"""
from __future__ import annotations

import argparse
import errno
import socket
import sys
import time
from collections.abc import Sequence

from profiler.lab.workload_common import MAX_WORKLOAD_S, StopFlag, emit

MAX_FLOWS = 50_000
SINK_POLL_S = 0.2

_stop = StopFlag()


def run_burst(to: str, port: int, first_source_port: int, flows: int) -> int:
    sent = refused = other_errors = 0
    start = time.monotonic()
    for source_port in range(first_source_port, first_source_port + flows):
        if _stop.requested:
            break
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind(("0.0.0.0", source_port))
            try:
                sock.sendto(b"conntrack lab", (to, port))
                sent += 1
            except OSError as exc:
                # NF_DROP on the output path comes back to the sender as EPERM.
                if exc.errno == errno.EPERM:
                    refused += 1
                else:
                    other_errors += 1
    record = {"role": "udp-burst", "to": f"{to}:{port}", "flows": flows, "sent": sent,
              "refused_eperm": refused, "other_errors": other_errors,
              "elapsed_s": round(time.monotonic() - start, 4), "stopped_by_signal": _stop.requested}
    emit({"event": "sent", **record})
    emit({"event": "summary", **record})
    return 0


def run_sink(port: int, duration_s: float) -> int:
    received = 0
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("0.0.0.0", port))
        sock.settimeout(SINK_POLL_S)
        emit({"event": "listening", "role": "udp-sink", "port": port})
        start = time.monotonic()
        while not _stop.requested and time.monotonic() - start < duration_s:
            try:
                sock.recv(2048)
                received += 1
            except TimeoutError:
                continue
            except InterruptedError:
                continue
    emit({"event": "summary", "role": "udp-sink", "port": port, "datagrams": received,
          "stopped_by_signal": _stop.requested})
    return 0


def burst_argv(to: str, port: int, first_source_port: int, flows: int) -> list[str]:
    return [sys.executable, "-m", "profiler.lab.workload_conntrack", "udp-burst", "--to", to,
            "--port", str(port), "--first-source-port", str(first_source_port), "--flows", str(flows)]


def sink_argv(port: int, duration_s: float) -> list[str]:
    return [sys.executable, "-m", "profiler.lab.workload_conntrack", "udp-sink", "--port", str(port),
            "--duration", f"{duration_s:g}"]


def _port(value: str) -> int:
    port = int(value)
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"bad port {value}")
    return port


def _bounded(limit: float):
    def parse(value: str) -> float:
        number = float(value)
        if not 0 < number <= limit:
            raise argparse.ArgumentTypeError(f"must be within (0, {limit:g}]")
        return number
    return parse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m profiler.lab.workload_conntrack",
                                     description="Conntrack workloads for netprof lab pods.")
    sub = parser.add_subparsers(dest="mode", required=True)
    burst = sub.add_parser("udp-burst", help="one datagram from each of K source ports")
    burst.add_argument("--to", required=True, help="destination IPv4 address (a lab pod's)")
    burst.add_argument("--port", type=_port, required=True)
    burst.add_argument("--first-source-port", type=_port, default=20000)
    burst.add_argument("--flows", type=lambda v: int(_bounded(MAX_FLOWS)(v)), default=200)
    sink = sub.add_parser("udp-sink", help="read every datagram sent to a port")
    sink.add_argument("--port", type=_port, required=True)
    sink.add_argument("--duration", type=_bounded(MAX_WORKLOAD_S), default=60.0)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _stop.install_handlers()
    if args.mode == "udp-burst":
        if args.first_source_port + args.flows > 65536:
            print("--first-source-port + --flows must stay within 65535", file=sys.stderr)
            return 2
        return run_burst(args.to, args.port, args.first_source_port, args.flows)
    return run_sink(args.port, args.duration)


if __name__ == "__main__":
    sys.exit(main())
