"""Flows into the guest from the harness's network namespace, over the tap (host side).

    python -m tests.kernels.traffic --dest 198.18.90.2 --flows 8 --pps 200

Each flow is its own UDP socket (its own source port) to its own destination port, so the
tap's flow hash (tun's automq, the host side of the guest's "RSS") puts flows on different
queues. It runs until killed (the harness starts it with the guest and stops it after) and
never sends anywhere but --dest, which must be in 198.18.90.0/24: only the guest sees it.
Until the guest's NIC is up the packets are simply dropped on the tap.
"""
from __future__ import annotations

import argparse
import ipaddress
import signal
import socket
import sys
import time

SUBNET = ipaddress.ip_network("198.18.90.0/24")
FIRST_PORT = 5001
PAYLOAD = b"netprof-mq" * 20


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.kernels.traffic", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dest", required=True, help="the guest's address (198.18.90.0/24 only)")
    parser.add_argument("--flows", type=int, default=8)
    parser.add_argument("--pps", type=int, default=200, help="packets per second per flow")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds (0: until killed)")
    return parser.parse_args(argv)


def send(dest: str, flows: int, pps: int, duration_s: float = 0.0) -> int:
    if ipaddress.ip_address(dest) not in SUBNET:
        raise ValueError(f"{dest} is outside {SUBNET}")
    sockets = []
    for index in range(flows):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        sockets.append((sock, (dest, FIRST_PORT + index)))
    interval = 1.0 / max(pps, 1)
    sent = 0
    started = next_at = time.monotonic()
    while not duration_s or time.monotonic() - started < duration_s:
        for sock, address in sockets:
            try:
                sock.sendto(PAYLOAD, address)
                sent += 1
            except OSError:
                pass  # a full tap queue before the guest reads it, or no route yet
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        else:
            next_at = time.monotonic()
    return sent


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        send(args.dest, args.flows, args.pps, args.duration)
    except ValueError as exc:
        print(f"traffic: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
