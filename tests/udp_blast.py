"""A UDP blast between two lab pods, waited for: the sink listening in "server" before
"client" sends, and stopped after. Tests that need packets on the wire, not a scenario."""
from __future__ import annotations

import subprocess

from profiler.lab.topology import Lab
from profiler.lab.workload_drops import udp_blast_argv, udp_sink_argv


def blast(lab: Lab, port: int, datagrams: int) -> None:
    sink = lab.popen("server", udp_sink_argv(port, 30, read=True), stdout=subprocess.PIPE, text=True)
    try:
        sink.stdout.readline()  # listening
        lab.run("client", udp_blast_argv(lab.pods["server"].ip, port, datagrams, 100, 10.0))
    finally:
        sink.terminate()
        sink.wait(5)
