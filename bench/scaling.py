"""Scaling: netprof's own per-interval work as the node grows.

Pods. N idle network namespaces (`ip netns add`, named like lab namespaces so that
`netprof lab down` finds them if this process dies) and a netprof session with every source.
The sources that read per-netns counters (netstat, conntrack) read active pods every
interval and idle ones in turn, a fixed number per interval (profiler/sources/netns_schedule.py),
so sample() should stop growing with N past that budget; the window lasts long enough for
the round-robin to visit every pod once, and the median and the worst interval are reported.
The inet_diag sampler (its own thread) still polls every pod once a second, and capture()
reads every pod's sysctls; the BPF side does not see idle namespaces at all.

Map keys. The BPF maps are read whole each interval (batched lookup, numpy decoding), but
Python touches only the keys whose counts moved. Here the retransmit probe's per-flow map is
filled from user space with N keys, all of them or 1% of them counting up every interval,
and the CPU of `LiveSession.sample()` and of `LiveSession.capture().to_json()` over a
10-interval window is measured: the work per interval must follow the number of active keys, not the
number of keys.
"""
from __future__ import annotations

import ctypes
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from profiler.lab.topology import NETNS_DIR, down_all, new_prefix
from profiler.sources.netns_schedule import IDLE_READS_PER_INTERVAL

from .cpu import CpuGroup
from .procs import python_tracer, rss_bytes

SAMPLING_WINDOW_S = 4.0
FAKE_NETNS = 4026599999  # no such namespace: keys the sampler must still handle
CAPTURE_WINDOW_INTERVALS = 10


def _ip_batch(commands: list[str]) -> None:
    subprocess.run(["ip", "-batch", "-"], input="\n".join(commands) + "\n", text=True, check=True,
                   capture_output=True)


def _sampling_window_s(pods: int) -> float:
    """Long enough for the idle round-robin to read every pod once (1 s intervals), so the
    median and the worst interval are the steady state, not a lucky stretch of it."""
    return max(SAMPLING_WINDOW_S, math.ceil(pods / IDLE_READS_PER_INTERVAL) + 2.0)


def run_pod_scaling(counts: list[int], log=print) -> list[dict]:
    rows = []
    log_dir = Path(tempfile.mkdtemp(prefix="netprof-bench-scaling-"))
    for count in counts:
        prefix = new_prefix()
        names = [f"{prefix}-idle{i}" for i in range(count)]
        try:
            started = time.monotonic()
            _ip_batch([f"netns add {name}" for name in names])
            created_s = time.monotonic() - started
            tracer = python_tracer("netprof")
            with CpuGroup("scaling") as group:
                try:
                    attach_started = time.monotonic()
                    tracer.start(group, log_dir)
                    attach_s = time.monotonic() - attach_started
                    time.sleep(_sampling_window_s(count))
                    rss = rss_bytes(tracer.pid)
                finally:
                    summary = tracer.stop()
            rows.append({
                "pods": count,
                "netns_create_s": created_s,
                "attach_and_first_sample_s": attach_s,
                "sample_cpu_ms": statistics.median(summary.get("sample_cpu_ms") or [0.0]),
                "sample_cpu_max_ms": max(summary.get("sample_cpu_ms") or [0.0]),
                "sample_wall_ms": statistics.median(summary.get("sample_wall_ms") or [0.0]),
                "intervals": len(summary.get("sample_cpu_ms") or []),
                "capture_cpu_ms": summary.get("capture_cpu_ms", 0.0),
                "cpu_percent": 100 * summary.get("window_cpu_s", 0.0) / max(summary.get("window_s", 1.0), 1e-9),
                "rss_bytes": rss,
            })
            log(f"  pods {count}: sample {rows[-1]['sample_cpu_ms']:.1f} ms CPU, "
                f"capture {rows[-1]['capture_cpu_ms']:.1f} ms, {rows[-1]['cpu_percent']:.1f}% CPU")
        finally:
            existing = [name for name in names if (NETNS_DIR / name).exists()]
            if existing:
                _ip_batch([f"netns del {name}" for name in existing])
            down_all(prefix)  # anything the batch missed, and the lab state file if any
    return rows


def _flow_arrays(table, count: int, active: int, round_index: int):
    keys = (table.Key * count)()
    values = (table.Leaf * count)()
    for i in range(count):
        key = keys[i]
        key.netns_inode = FAKE_NETNS
        key.family = 2
        key.sport = 10000 + i % 50000
        key.dport = 443
        key.state = 1
        key.saddr[0], key.saddr[1], key.saddr[2], key.saddr[3] = 198, 18, (i >> 8) & 0xFF, i & 0xFF
        key.daddr[0], key.daddr[1], key.daddr[2], key.daddr[3] = 198, 18, 0, 2
        bumps = round_index if i < active else 0
        values[i].retransmits = 1 + bumps
        values[i].segments = 1 + bumps
    return keys, values


def run_flow_scaling(counts: list[int], log=print, intervals: int = 11) -> list[dict]:
    from profiler.live import LiveSession
    from profiler.sources.retransmits import RetransmitSource

    rows = []
    for count in counts:
        for active_share in (1.0, 0.01):
            active = max(1, int(count * active_share))
            with LiveSession(sources=[RetransmitSource()], measure_cost=False,
                             window_s=CAPTURE_WINDOW_INTERVALS * 0.2 + 0.1) as session:
                session.start()
                bpf = next(b for program, b in session.loader.loaded if program == "retransmits")
                table = bpf[b"retransmits_by_flow"]
                sample_ms, capture_ms = [], []
                for round_index in range(intervals):
                    keys, values = _flow_arrays(table, count, active, round_index)
                    table.items_update_batch(keys, values)
                    time.sleep(0.2)
                    before = time.process_time()
                    session.sample()
                    sample_ms.append((time.process_time() - before) * 1e3)
                    if round_index >= CAPTURE_WINDOW_INTERVALS:
                        before = time.process_time()
                        session.capture(with_node=False).to_json()  # what every view does with it
                        capture_ms.append((time.process_time() - before) * 1e3)
                # The first intervals see every key as new; steady state is what scales.
                steady = sample_ms[2:]
            rows.append({"keys": count, "active": active,
                         "sample_cpu_ms": statistics.median(steady),
                         "capture_cpu_ms": statistics.median(capture_ms) if capture_ms else 0.0,
                         "us_per_active_key": 1e3 * statistics.median(steady) / active})
            log(f"  keys {count} active {active}: sample {rows[-1]['sample_cpu_ms']:.2f} ms, "
                f"capture {rows[-1]['capture_cpu_ms']:.2f} ms")
    return rows


def pods_table(rows: list[dict]) -> str:
    lines = ["| idle pods | sample() CPU ms (median) | sample() CPU ms (max) | sample() wall ms | intervals "
             "| capture() CPU ms | netprof CPU % | RSS MiB | attach + first sample s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['pods']} | {row['sample_cpu_ms']:.1f} | {row['sample_cpu_max_ms']:.1f} "
                     f"| {row['sample_wall_ms']:.1f} | {row['intervals']} "
                     f"| {row['capture_cpu_ms']:.1f} | {row['cpu_percent']:.1f} | {row['rss_bytes'] / 2**20:.0f} "
                     f"| {row['attach_and_first_sample_s']:.1f} |")
    return "\n".join(lines)


def flows_table(rows: list[dict]) -> str:
    lines = [f"| flow keys in the map | active per interval | sample() CPU ms | µs per active key "
             f"| capture().to_json() CPU ms ({CAPTURE_WINDOW_INTERVALS}-interval window) |", "|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['keys']} | {row['active']} | {row['sample_cpu_ms']:.2f} | {row['us_per_active_key']:.1f} "
                     f"| {row['capture_cpu_ms']:.2f} |")
    return "\n".join(lines)
