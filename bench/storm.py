"""Storms: drops and retransmits as fast as the lab can make them, with netprof attached
(and, for comparison, BCC's per-event tools). What matters: how many events per second were
handled, whether netprof's counts match the kernel's own (SNMP) counters, what it lost,
and whether it kept sampling on time."""
from __future__ import annotations

import statistics
from pathlib import Path

from profiler.lab.topology import Lab

from .cpu import CpuGroup
from .overhead import tracers_for
from .procs import rss_bytes
from .workloads import Workloads

STORMS = {
    # workload → (kernel counter that is the truth, pod whose netns it belongs to, netprof's count)
    "drop": ("Udp.RcvbufErrors", "server", "drops_by_pod"),
    "retrans": ("Tcp.RetransSegs", "client", "retransmitted_segments_by_pod"),
}
STORM_CONFIGS = ("netprof", "bcc-tools")


def run_storm(duration_s: float, log_dir: Path, log=print) -> list[dict]:
    rows = []
    with Lab.up(["server", "client"]) as lab:
        work = Workloads(lab, server_cpu=1, client_cpu=0)
        for workload, (counter, pod, netprof_field) in STORMS.items():
            inode = str(lab.pods[pod].netns_inode)
            for config in STORM_CONFIGS:
                tracers = tracers_for(config)
                summaries: dict[str, dict] = {}
                with CpuGroup(f"storm-{config}") as group:
                    try:
                        for tracer in tracers:
                            tracer.start(group, log_dir)
                        cpu_before = group.usage_ns()
                        result = work.run(workload, duration_s)
                        tracer_cpu_ns = group.usage_ns() - cpu_before
                        rss = sum(rss_bytes(t.pid) for t in tracers)
                    finally:
                        for tracer in tracers:
                            summaries[tracer.name] = tracer.stop()
                truth = result.counters.get(counter, 0)
                row = {
                    "workload": workload, "config": config, "counter": counter, "truth": truth,
                    "truth_per_s": truth / result.seconds if result.seconds else 0.0,
                    "rate": result.rate, "tracer_cpu_percent": 100 * tracer_cpu_ns / (result.seconds * 1e9),
                    "tracer_rss_bytes": rss,
                }
                netprof = summaries.get("netprof")
                if netprof:
                    row.update({
                        "counted": int(netprof.get(netprof_field, {}).get(inode, 0)),
                        "lost_events": netprof.get("lost_events", {}),
                        "lateness_max_ms": max(netprof.get("lateness_ms") or [0.0]),
                        "sample_wall_max_ms": max(netprof.get("sample_wall_ms") or [0.0]),
                        "sample_cpu_median_ms": statistics.median(netprof.get("sample_cpu_ms") or [0.0]),
                        "intervals_ms": netprof.get("intervals_ms", []),
                    })
                ports = summaries.get("bcc-ports")
                if ports:
                    row.update({"tcpretrans_events": ports.get("tcpretrans_events", 0),
                                "tcpdrop_events": ports.get("tcpdrop_events", 0),
                                "lost_samples": ports.get("lost_samples", 0)})
                rows.append(row)
                log(f"  storm {workload:<7} {config:<9} truth {truth} ({row['truth_per_s']:.0f}/s) "
                    f"counted {row.get('counted', '-')} tracer cpu {row['tracer_cpu_percent']:.1f}%")
    return rows


def storm_table(rows: list[dict]) -> str:
    lines = ["| storm | tracer | kernel's count | events/s | tracer counted | counted ÷ kernel | losses "
             "| sampling late (max ms) | sample() wall (max ms) | tracer CPU % |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        if row["config"] == "netprof":
            counted = row.get("counted", 0)
            share = f"{counted / row['truth']:.3f}" if row["truth"] else "–"
            lost = {k: v for k, v in row.get("lost_events", {}).items() if v}
            losses = ", ".join(f"{k} {v}" for k, v in lost.items()) or "0"
            lines.append(f"| {row['workload']} ({row['counter']}) | netprof | {row['truth']} | {row['truth_per_s']:.0f} "
                         f"| {counted} | {share} | {losses} | {row.get('lateness_max_ms', 0):.1f} "
                         f"| {row.get('sample_wall_max_ms', 0):.1f} | {row['tracer_cpu_percent']:.1f} |")
        else:
            seen = row.get("tcpdrop_events", 0) if row["workload"] == "drop" else row.get("tcpretrans_events", 0)
            lines.append(f"| {row['workload']} ({row['counter']}) | BCC tools | {row['truth']} | {row['truth_per_s']:.0f} "
                         f"| {seen} events to user space | – | perf buffer lost {row.get('lost_samples', 0)} | – | – "
                         f"| {row['tracer_cpu_percent']:.1f} |")
    return "\n".join(lines)
