"""Workloads for the drop scenarios, run inside fake pods: `python -m profiler.lab.workload_drops …`.

    udp-sink --port P [--rcvbuf B] [--read] [--duration S]
        binds a UDP socket; with a tiny SO_RCVBUF and no --read, the queue fills and every
        further datagram is dropped (reason SOCKET_RCVBUFF, UdpRcvbufErrors).
    udp-blast --to IP --port P [--count N] [--size B] [--duration S] [--cpu C]
        sends N datagrams (0: as many as fit in --duration) as fast as it can, optionally
        pinned to one CPU so the enqueuing CPU is known (CPU_BACKLOG drops fire there).
    ping-flood --to IP [--count N] [--rcvbuf B]
        an ICMP datagram ("ping") socket with a tiny SO_RCVBUF sends N echo requests and never
        reads the replies: they overflow in __sock_queue_rcv_skb, the one receive path that
        fires sock:sock_rcvqueue_full (UDP and TCP check their buffers in their own code).
        Needs net.ipv4.ping_group_range to include the caller's group in the pod.
    rps --device DEV --cpus MASK
        writes the RPS CPU mask of every receive queue of DEV (in the pod's own sysfs).

Each prints JSON lines: `listening` when a sink is ready, then one `summary`; the sockets'
own drop counters (SO_MEMINFO's SK_MEMINFO_DROPS) are in the summaries, as ground truth.
Every workload stops by itself (durations are capped) and on SIGTERM/SIGINT. Standard
library only: it starts once per pod.
"""
from __future__ import annotations

import argparse
import os
import re
import socket
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from profiler.lab.workload_common import MAX_WORKLOAD_S, StopFlag, duration_type, emit

MAX_COUNT = 10_000_000
SO_MEMINFO = 55           # include/uapi/asm-generic/socket.h
SK_MEMINFO_VARS = 9
SK_MEMINFO_DROPS = 8      # index of sk_drops in the SO_MEMINFO array
ICMP_ECHO_REQUEST = 8
POLL_S = 0.1

_stop = StopFlag()
_duration = duration_type(MAX_WORKLOAD_S)


def socket_drops(sock: socket.socket) -> int | None:
    """The kernel's count of packets this socket dropped (sk_drops), or None if unknown."""
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, SO_MEMINFO, 4 * SK_MEMINFO_VARS)
    except OSError:
        return None
    return struct.unpack(f"{SK_MEMINFO_VARS}I", raw)[SK_MEMINFO_DROPS]


SO_RCVBUFFORCE = 33  # asm-generic/socket.h; the socket module does not export it


def run_udp_sink(port: int, rcvbuf: int | None, read: bool, duration_s: float) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if rcvbuf is not None:
        try:
            # As root (the lab always is), SO_RCVBUFFORCE is not capped at net.core.rmem_max,
            # so a sink can be made large enough never to be the bottleneck. Same doubling.
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf)
        except PermissionError:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.bind(("0.0.0.0", port))
    sock.settimeout(POLL_S)
    effective_rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    emit({"event": "listening", "role": "udp-sink", "port": port, "rcvbuf": effective_rcvbuf})
    start = time.monotonic()
    received = 0
    try:
        while not _stop.requested and time.monotonic() - start < duration_s:
            if not read:
                time.sleep(POLL_S)
                continue
            try:
                sock.recv(65536)
                received += 1
            except TimeoutError:
                continue
        drops = socket_drops(sock)
    finally:
        sock.close()
    emit({"event": "summary", "role": "udp-sink", "port": port, "received": received,
          "socket_drops": drops, "rcvbuf": effective_rcvbuf,
          "elapsed_s": round(time.monotonic() - start, 3), "stopped_by_signal": _stop.requested})
    return 0


def run_udp_blast(to: str, port: int, count: int, size: int, duration_s: float, cpu: int | None) -> int:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect((to, port))
    payload = b"d" * size
    sent = 0
    errors = 0
    start = time.monotonic()
    deadline = start + duration_s
    try:
        while not _stop.requested and (count == 0 or sent + errors < count):
            # The clock is read every 256 sends: the point is to send as fast as possible.
            if (sent + errors) & 0xFF == 0 and time.monotonic() >= deadline:
                break
            try:
                sock.send(payload)
                sent += 1
            except OSError:  # ECONNREFUSED from an earlier ICMP error, ENOBUFS
                errors += 1
    finally:
        sock.close()
    emit({"event": "summary", "role": "udp-blast", "to": f"{to}:{port}", "sent": sent,
          "send_errors": errors, "cpu": cpu, "elapsed_s": round(time.monotonic() - start, 3),
          "stopped_by_signal": _stop.requested})
    return 0


def _icmp_checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def run_ping_flood(to: str, count: int, rcvbuf: int, settle_s: float) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sent = 0
    try:
        for sequence in range(count):
            if _stop.requested:
                break
            # Ping sockets fill in the identifier and checksum, but a valid checksum costs nothing.
            header = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, 0, 0, sequence & 0xFFFF)
            payload = b"p" * 56
            checksum = _icmp_checksum(header + payload)
            packet = struct.pack("!BBHHH", ICMP_ECHO_REQUEST, 0, checksum, 0, sequence & 0xFFFF) + payload
            sock.sendto(packet, (to, 0))
            sent += 1
        # Replies still in flight when the loop ends must reach the socket before it is read.
        time.sleep(settle_s)
        drops = socket_drops(sock)
    finally:
        sock.close()
    emit({"event": "summary", "role": "ping-flood", "to": to, "sent": sent, "socket_drops": drops,
          "stopped_by_signal": _stop.requested})
    return 0


_DEVICE_RE = re.compile(r"^[A-Za-z0-9_.\-]{1,15}$")


def run_rps(device: str, cpus: str, sys_root: Path = Path("/sys")) -> int:
    if not _DEVICE_RE.match(device) or not re.match(r"^[0-9a-fA-F,]+$", cpus):
        print(f"bad device {device!r} or mask {cpus!r}", file=sys.stderr)
        return 2
    queues = sorted((sys_root / "class/net" / device / "queues").glob("rx-*"))
    if not queues:
        print(f"{device} has no receive queues in {sys_root}", file=sys.stderr)
        return 1
    for queue in queues:
        (queue / "rps_cpus").write_text(f"{cpus}\n")
    emit({"event": "summary", "role": "rps", "device": device, "cpus": cpus,
          "queues": [queue.name for queue in queues]})
    return 0


def _count(value: str) -> int:
    count = int(value)
    if not 0 <= count <= MAX_COUNT:
        raise argparse.ArgumentTypeError(f"count must be within [0, {MAX_COUNT}]")
    return count


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m profiler.lab.workload_drops",
                                     description="Workloads that make the kernel drop packets.")
    sub = parser.add_subparsers(dest="mode", required=True)
    sink = sub.add_parser("udp-sink", help="a UDP socket, optionally never read")
    sink.add_argument("--port", type=int, required=True)
    sink.add_argument("--rcvbuf", type=int, default=None, help="SO_RCVBUF (the kernel doubles it)")
    sink.add_argument("--read", action="store_true", help="read everything (default: never read)")
    sink.add_argument("--duration", type=_duration, default=60.0)
    blast = sub.add_parser("udp-blast", help="send UDP datagrams as fast as possible")
    blast.add_argument("--to", required=True, help="IPv4 address of a lab pod")
    blast.add_argument("--port", type=int, required=True)
    blast.add_argument("--count", type=_count, default=1000, help="datagrams (0: until --duration)")
    blast.add_argument("--size", type=int, default=100, help="payload bytes")
    blast.add_argument("--duration", type=_duration, default=10.0)
    blast.add_argument("--cpu", type=int, default=None, help="pin the sender to this CPU")
    ping = sub.add_parser("ping-flood", help="echo requests from a ping socket that never reads")
    ping.add_argument("--to", required=True, help="IPv4 address of a lab pod")
    ping.add_argument("--count", type=_count, default=300)
    ping.add_argument("--rcvbuf", type=int, default=4096)
    ping.add_argument("--settle", type=float, default=0.2, help="seconds to wait for late replies")
    rps = sub.add_parser("rps", help="set the RPS CPU mask of a device's receive queues")
    rps.add_argument("--device", required=True)
    rps.add_argument("--cpus", required=True, help="hex CPU mask, e.g. 1 for CPU0")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    _stop.install_handlers()
    if args.mode == "udp-sink":
        return run_udp_sink(args.port, args.rcvbuf, args.read, args.duration)
    if args.mode == "udp-blast":
        return run_udp_blast(args.to, args.port, args.count, args.size, args.duration, args.cpu)
    if args.mode == "ping-flood":
        return run_ping_flood(args.to, args.count, args.rcvbuf, args.settle)
    return run_rps(args.device, args.cpus)


def udp_sink_argv(port: int, duration_s: float, rcvbuf: int | None = None, read: bool = False) -> list[str]:
    argv = [sys.executable, "-m", "profiler.lab.workload_drops", "udp-sink", "--port", str(port),
            "--duration", f"{duration_s:g}"]
    if rcvbuf is not None:
        argv += ["--rcvbuf", str(rcvbuf)]
    if read:
        argv.append("--read")
    return argv


def udp_blast_argv(to: str, port: int, count: int, size: int, duration_s: float,
                   cpu: int | None = None) -> list[str]:
    argv = [sys.executable, "-m", "profiler.lab.workload_drops", "udp-blast", "--to", to,
            "--port", str(port), "--count", str(count), "--size", str(size),
            "--duration", f"{duration_s:g}"]
    if cpu is not None:
        argv += ["--cpu", str(cpu)]
    return argv


def ping_flood_argv(to: str, count: int, rcvbuf: int) -> list[str]:
    return [sys.executable, "-m", "profiler.lab.workload_drops", "ping-flood", "--to", to,
            "--count", str(count), "--rcvbuf", str(rcvbuf)]


def rps_argv(device: str, cpu_mask: int) -> list[str]:
    return [sys.executable, "-m", "profiler.lab.workload_drops", "rps", "--device", device,
            "--cpus", f"{cpu_mask:x}"]


if __name__ == "__main__":
    sys.exit(main())
