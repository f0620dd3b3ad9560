"""The tracers the benchmark compares, each run as its own process:

    python -m bench.tracers floor             empty programs on netprof's hooks
    python -m bench.tracers floor-raw         the same hooks through raw tracepoints
    python -m bench.tracers netprof           a LiveSession, every source, sampled every 1 s,
                                              as shipped (programs timed 1 interval in 10)
    python -m bench.tracers netprof-nostats   the same without BPF run-time statistics
    python -m bench.tracers netprof-stats     the same with statistics on all the time: what
                                              the bench reads events and program times from
    python -m bench.tracers netprof-quiet     netprof as shipped but pinned to the quiet detail tier
                                              (--tier quiet: no softirq/NAPI programs running,
                                              stack walks paused; profiler/detail_tier.py)
    python -m bench.tracers netprof-auto      netprof as `serve` runs it (--tier auto): quiet until
                                              an interval shows trouble, then full
    python -m bench.tracers bcc-ports         BCC's tcpretrans and tcpdrop, ported to the shim

A tracer prints one JSON line once it is attached ({"ready": true, ...}), runs until SIGINT
or SIGTERM, and prints one JSON line with what it saw. Both signals are blocked and waited
for with sigtimedwait, so a stop never lands in the middle of a sample.

BCC's own softirqs tool runs unmodified (bench/run.py starts `softirqs-bpfcc`); its
tcpretrans and tcpdrop need kernel headers (<net/sock.h>), which this kernel does not ship,
so their programs are ported here line for line with struct offsets from BTF, keeping their
per-event perf buffer output and per-event Python formatting (tcpdrop also walks and
symbolizes each drop's kernel stack, as the tool does).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Callable

BPF_DIR = Path(__file__).parent / "bpf"
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}
SAMPLE_INTERVAL_S = 1.0

# Every hook the floor attaches to (bench/bpf/floor.bpf.c): its events are checked against
# netprof's (floor_raw.bpf.c is on the same events through raw tracepoints).
FLOOR_HOOKS = (
    "tracepoint:irq:softirq_raise", "tracepoint:irq:softirq_entry", "tracepoint:irq:softirq_exit",
    "tracepoint:napi:napi_poll", "tracepoint:skb:kfree_skb", "tracepoint:tcp:tcp_retransmit_skb",
    "tracepoint:syscalls:sys_enter_listen", "raw_tracepoint:sock_rcvqueue_full",
)


# Hooks that see the same kernel event under another name: fentry on the function behind a
# syscall is that syscall's entry (netprof's listen probe takes it where the kernel allows).
SAME_EVENT = {"__sys_listen": "sys_enter_listen"}


def hook_event(hook: str) -> str:
    """The kernel event of a hook, whatever the method: "tracepoint:irq:softirq_entry" and
    "raw_tracepoint:softirq_entry" are both "softirq_entry", "fentry:__sys_listen" is
    "sys_enter_listen"."""
    event = hook.rsplit(":", 1)[-1]
    return SAME_EVENT.get(event, event)


def emit(doc: dict) -> None:
    sys.stdout.write(json.dumps(doc) + "\n")
    sys.stdout.flush()


def block_stop_signals() -> None:
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)


def wait_for_stop(timeout_s: float) -> bool:
    """Sleep up to timeout_s; True when a stop signal arrived."""
    if timeout_s <= 0:
        timeout_s = 0.0
    return signal.sigtimedwait(STOP_SIGNALS, timeout_s) is not None


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def compile_with_shim(path: Path, cflags: list[str] = ()):
    from profiler.kernel.loader import import_bcc
    from profiler.kernel.shim import ensure_shim

    bcc = import_bcc()
    os.environ["BCC_KERNEL_SOURCE"] = str(ensure_shim())
    return bcc.BPF(src_file=str(path).encode(), cflags=list(cflags))


def program_ids(loaded) -> dict[int, str]:
    """prog_id → hook of loaded BCC objects, so the runner can read their counters from
    /proc/<pid>/fdinfo without asking this process."""
    from profiler.cost import loaded_program_fds, read_prog_stats

    ids = {}
    for _, hook, fd in loaded_program_fds(loaded):
        stats = read_prog_stats(fd)
        if stats is not None:
            ids[stats.prog_id] = hook
    return ids


def run_floor(name: str = "floor", source: str = "floor.bpf.c") -> None:
    from profiler.cost import loaded_program_fds

    bpf = compile_with_shim(BPF_DIR / source)
    hooks = sorted(hook for _, hook, _ in loaded_program_fds([(name, bpf)]))
    emit({"ready": True, "hooks": hooks, "programs": program_ids([(name, bpf)])})
    while not wait_for_stop(3600):
        pass
    bpf.cleanup()
    emit({"tracer": name, "hooks": hooks})


def run_netprof(name: str, measure_cost: bool, cost_sample_every: int | None = None, tier: str = "full") -> None:
    from profiler.cost import COST_SAMPLE_EVERY, loaded_program_fds
    from profiler.detail_tier import TierSettings
    from profiler.live import LiveSession

    session = LiveSession(measure_cost=measure_cost, cost_sample_every=cost_sample_every or COST_SAMPLE_EVERY,
                          tier=TierSettings(mode=tier))
    with session:
        session.start()
        hooks = sorted({hook for _, hook, _ in loaded_program_fds(session.loader.loaded)})
        # One interval before measuring: the first sample does one-off work (e.g. parsing
        # /proc/kallsyms for the first drop site), which is startup, not steady state.
        cpu_before = cpu_s()
        wait_for_stop(SAMPLE_INTERVAL_S)
        session.sample()
        first_sample_cpu_ms = (cpu_s() - cpu_before) * 1e3
        emit({"ready": True, "hooks": hooks, "programs": program_ids(session.loader.loaded),
              "probes": [s.to_json() for s in session.statuses]})
        cpu_start = cpu_s()
        wall_start = time.monotonic()
        lateness_ms: list[float] = []     # how late each sample started against its 1 s tick
        intervals_ms: list[float] = []    # what each snapshot covered
        sample_cpu_ms: list[float] = []   # process CPU (all threads) while sample() ran
        sample_wall_ms: list[float] = []
        tick = time.monotonic() + SAMPLE_INTERVAL_S
        stopping = False
        while not stopping:
            stopping = wait_for_stop(tick - time.monotonic())
            woke = time.monotonic()
            if not stopping:
                lateness_ms.append((woke - tick) * 1e3)
            cpu_before = cpu_s()
            snapshot = session.sample()
            sample_cpu_ms.append((cpu_s() - cpu_before) * 1e3)
            sample_wall_ms.append((time.monotonic() - woke) * 1e3)
            intervals_ms.append((snapshot.ended_s - snapshot.started_s) * 1e3)
            tick += SAMPLE_INTERVAL_S
            while tick < time.monotonic():  # fell more than an interval behind: skip ticks
                tick += SAMPLE_INTERVAL_S
        window_cpu_s = cpu_s() - cpu_start
        window_s = time.monotonic() - wall_start
        cpu_before, wall_before = cpu_s(), time.monotonic()
        capture = session.capture()
        capture_cpu_ms = (cpu_s() - cpu_before) * 1e3
        capture_wall_ms = (time.monotonic() - wall_before) * 1e3
        doc = capture.to_json()
    pods = doc.get("pods", [])
    emit({
        "tracer": name,
        "hooks": hooks,
        "first_sample_cpu_ms": first_sample_cpu_ms,
        "cost": doc.get("cost"),
        "lost_events": doc.get("lost_events", {}),
        "ignored_events": doc.get("ignored_events", {}),
        "probes": doc.get("probes", []),
        "tier": doc.get("tier"),
        "drops": sum(sum(p.get("drops", {}).values()) for p in pods),
        "drops_by_pod": {str(p["netns"]): sum(p.get("drops", {}).values()) for p in pods if p.get("drops")},
        "retransmits": sum(p.get("retransmits", 0) for p in pods),
        "retransmits_by_pod": {str(p["netns"]): p["retransmits"] for p in pods if p.get("retransmits")},
        "retransmitted_segments_by_pod": {str(p["netns"]): p.get("retransmitted_segments", 0)
                                          for p in pods if p.get("retransmits")},
        "duration_s": doc.get("duration_s"),
        "window_s": window_s,
        "window_cpu_s": window_cpu_s,
        "lateness_ms": lateness_ms,
        "intervals_ms": intervals_ms,
        "sample_cpu_ms": sample_cpu_ms,
        "sample_wall_ms": sample_wall_ms,
        "capture_cpu_ms": capture_cpu_ms,
        "capture_wall_ms": capture_wall_ms,
    })


TCP_STATES = {1: "ESTABLISHED", 2: "SYN_SENT", 3: "SYN_RECV", 4: "FIN_WAIT1", 5: "FIN_WAIT2",
              6: "TIME_WAIT", 7: "CLOSE", 8: "CLOSE_WAIT", 9: "LAST_ACK", 10: "LISTEN", 11: "CLOSING",
              12: "NEW_SYN_RECV"}


def port_cflags() -> list[str]:
    from profiler.kernel.btf import Btf

    btf = Btf.from_file()
    offsets = {
        "SOCK_FAMILY_OFFSET": btf.field_offset("sock", "__sk_common.skc_family"),
        "SOCK_STATE_OFFSET": btf.field_offset("sock", "__sk_common.skc_state"),
        "SKB_CB_OFFSET": btf.field_offset("sk_buff", "cb"),
        "TCP_SKB_CB_SEQ_OFFSET": btf.field_offset("tcp_skb_cb", "seq"),
        "SKB_SK_OFFSET": btf.field_offset("sk_buff", "sk"),
        "SKB_HEAD_OFFSET": btf.field_offset("sk_buff", "head"),
        "SKB_TRANSPORT_HEADER_OFFSET": btf.field_offset("sk_buff", "transport_header"),
        "SKB_NETWORK_HEADER_OFFSET": btf.field_offset("sk_buff", "network_header"),
        "DROP_REASON_NOT_SPECIFIED": btf.enum("skb_drop_reason")["SKB_DROP_REASON_NOT_SPECIFIED"],
    }
    return [f"-D{name}={value}" for name, value in offsets.items()]


def run_bcc_ports() -> None:
    """tcpretrans and tcpdrop as the BCC tools run them: every event through a perf buffer
    to a Python callback that formats a line (written to /dev/null here)."""
    cflags = port_cflags()
    retrans = compile_with_shim(BPF_DIR / "bcc_tcpretrans.bpf.c", cflags)
    drop = compile_with_shim(BPF_DIR / "bcc_tcpdrop.bpf.c", cflags)
    sink = open(os.devnull, "w")
    counts = {"tcpretrans_events": 0, "tcpdrop_events": 0, "lost_samples": 0}

    def lost(count: int) -> None:
        counts["lost_samples"] += count

    def retrans_v4(cpu, data, size):
        event = retrans[b"ipv4_events"].event(data)
        counts["tcpretrans_events"] += 1
        sink.write("%-8s %-7d %-2d %-20s R> %-20s %s\n" % (
            time.strftime("%H:%M:%S"), event.pid, event.ip,
            "%s:%d" % (socket.inet_ntop(socket.AF_INET, struct.pack("I", event.saddr)), event.lport),
            "%s:%d" % (socket.inet_ntop(socket.AF_INET, struct.pack("I", event.daddr)), event.dport),
            TCP_STATES.get(event.state, str(event.state))))

    stack_traces = drop.get_table("stack_traces")

    def drop_v4(cpu, data, size):
        event = drop[b"ipv4_events"].event(data)
        counts["tcpdrop_events"] += 1
        sink.write("%-8s %-7d %-2d %-20s > %-20s %s (%d)\n" % (
            time.strftime("%H:%M:%S"), event.pid, event.ip,
            "%s:%d" % (socket.inet_ntop(socket.AF_INET, struct.pack("I", event.saddr)), event.sport),
            "%s:%d" % (socket.inet_ntop(socket.AF_INET, struct.pack("I", event.daddr)), event.dport),
            TCP_STATES.get(event.state, str(event.state)), event.tcpflags))
        for addr in stack_traces.walk(event.stack_id):
            sink.write("\t%s\n" % drop.ksym(addr, show_offset=True).decode(errors="replace"))

    def ignore_v6(cpu, data, size):
        pass

    retrans[b"ipv4_events"].open_perf_buffer(retrans_v4, lost_cb=lost)
    retrans[b"ipv6_events"].open_perf_buffer(ignore_v6, lost_cb=lost)
    drop[b"ipv4_events"].open_perf_buffer(drop_v4, lost_cb=lost)
    drop[b"ipv6_events"].open_perf_buffer(ignore_v6, lost_cb=lost)
    loaded = [("tcpretrans", retrans), ("tcpdrop", drop)]
    emit({"ready": True, "hooks": ["tracepoint:tcp:tcp_retransmit_skb", "tracepoint:skb:kfree_skb"],
          "programs": program_ids(loaded)})
    cpu_start = cpu_s()
    while not wait_for_stop(0):
        retrans.perf_buffer_poll(timeout=50)
        drop.perf_buffer_poll(timeout=50)
    window_cpu_s = cpu_s() - cpu_start
    retrans.cleanup()
    drop.cleanup()
    emit({"tracer": "bcc-ports", **counts, "window_cpu_s": window_cpu_s})


TRACERS: dict[str, Callable[[], None]] = {
    "floor": run_floor,
    "floor-raw": lambda: run_floor("floor-raw", "floor_raw.bpf.c"),
    "netprof": lambda: run_netprof("netprof", True),
    "netprof-nostats": lambda: run_netprof("netprof-nostats", False),
    "netprof-stats": lambda: run_netprof("netprof-stats", True, cost_sample_every=1),
    "netprof-quiet": lambda: run_netprof("netprof-quiet", True, tier="quiet"),
    "netprof-auto": lambda: run_netprof("netprof-auto", True, tier="auto"),
    "bcc-ports": run_bcc_ports,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tracers")
    parser.add_argument("tracer", choices=sorted(TRACERS))
    args = parser.parse_args(argv)
    block_stop_signals()
    TRACERS[args.tracer]()
    return 0


if __name__ == "__main__":
    sys.exit(main())
