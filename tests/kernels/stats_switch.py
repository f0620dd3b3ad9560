"""Switch the kernel's BPF run-time statistics on and off, fast, with or without netprof's
softirq programs attached: does the kernel survive? (docs/cost.md, "When statistics are on")

    python -m tests.kernels -k trixie -c '.venv/bin/python -m tests.kernels.stats_switch 3000 --attach'

Each switch flips one static key, which patches kernel text on every CPU. On Debian's 6.12
in a QEMU guest, with the programs attached, this oopsed (int3 in bpf_trace_run1) within
200 switches; without them it survived 3,000. UDP to the discard port on loopback keeps
softirqs coming; nothing leaves the machine.
"""
from __future__ import annotations

import argparse
import socket
import threading
import time

from profiler.cost import BpfStatsSwitch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.kernels.stats_switch", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("switches", type=int, help="how many on-off switches")
    parser.add_argument("--attach", action="store_true", help="with netprof's softirq programs attached")
    args = parser.parse_args(argv)
    session = None
    if args.attach:
        from profiler.live import LiveSession
        from profiler.sources.softirq import SoftirqSource
        session = LiveSession(sources=[SoftirqSource()], measure_cost=False)
        session.start()
        print("attached:", [(s.name, s.attached, s.via) for s in session.statuses], flush=True)
    stop = threading.Event()

    def blast() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            while not stop.is_set():
                sock.sendto(b"x" * 64, ("127.0.0.1", 9))

    threading.Thread(target=blast, daemon=True).start()
    started = time.monotonic()
    stats = BpfStatsSwitch()
    try:
        for switch in range(args.switches):
            stats.enable()
            if not stats.enabled:
                print(f"statistics refused: {stats.error}")
                return 1
            time.sleep(0.002)
            stats.disable()
            time.sleep(0.002)
            if switch % 200 == 0:
                print(f"switch {switch} at {time.monotonic() - started:.1f} s", flush=True)
    finally:
        stats.disable()
        stop.set()
        if session is not None:
            session.stop()
    print(f"survived {args.switches} switches (attached: {args.attach}) in {time.monotonic() - started:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
