"""Traffic inside a pod that netprof must charge to that pod: UDP datagrams over the pod's
own loopback into a socket whose 4 KiB receive buffer is never read, so all but the first
few are dropped by the kernel (SOCKET_RCVBUFF) in the pod's netns — the lab's rcvbuf-drops
recipe (design.md §8: 1000 datagrams → 991 drops), run in the netns with nsenter."""
from __future__ import annotations

import subprocess
import sys

# SO_RCVBUFFORCE (33): as root, not capped by net.core.rmem_max, so no node sysctl changes.
_PROGRAM = """
import socket, sys
count = int(sys.argv[1])
sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sink.setsockopt(socket.SOL_SOCKET, 33, 4096)
sink.bind(("127.0.0.1", 0))
blast = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for _ in range(count):
    blast.sendto(b"x" * 100, sink.getsockname())
"""


def rcvbuf_drops_in(netns: str, datagrams: int) -> None:
    """Send `datagrams` into a never-read socket inside the netns at `netns` (a
    /proc/<pid>/ns/net or nsfs path); the sender and the sink both live in that netns."""
    subprocess.run(["nsenter", f"--net={netns}", sys.executable, "-c", _PROGRAM, str(datagrams)],
                   check=True, timeout=60)
