"""Where the exported data comes from, without a kernel: stack counts turned into per-interval
StackSamples by the drop and retransmit sources, stack symbolization, the C/numpy layouts of
the stack maps, and the listener sampler's depth histogram."""
from __future__ import annotations

import re
import socket
from pathlib import Path
from types import MappingProxyType, SimpleNamespace

import numpy as np

from profiler.kernel.kallsyms import Kallsyms
from profiler.kernel.stacks import (
    KALLSYMS_RELOAD_S, STACK_COUNT, STACK_LOST_SLOTS, SharedKallsyms, StackFold, StackSampling, StackSymbolizer,
)
from profiler.probes.base import ProbeStatus
from profiler.probes.drops import (
    COUNT, LISTEN_KEY, NETNS_KEY as DROP_NETNS_KEY, NETNS_REASON_KEY, REASON_KEY, SITE_KEY,
    STACK_KEY as DROP_STACK_KEY, UNCOUNTED_SLOTS, DropCounts,
)
from profiler.probes.retransmits import (
    COUNTS, FLOW_KEY, NETNS_KEY, STACK_KEY as RETRANSMIT_STACK_KEY, RetransmitCounts,
)
from profiler.snapshot import SnapshotFrame
from profiler.sources.drops import DropSource
from profiler.sources.retransmits import RETRANSMIT_STACK_REASON, RetransmitSource
from profiler.system.listeners import ListenerRow, ListenerSampler

BPF = Path(__file__).resolve().parents[2] / "bpf"
REASONS = {2: "NOT_SPECIFIED", 6: "SOCKET_RCVBUFF", 40: "TCP_LISTEN_OVERFLOW"}
KALLSYMS = Kallsyms.parse(
    "ffffffff81000000 T do_syscall_64\n"
    "ffffffff81100000 t udp_queue_rcv_one_skb\n"
    "ffffffff81200000 T sk_skb_reason_drop\n"
    "ffffffffc0000000 t nft_do_chain\t[nf_tables]\n"
    "ffffffff81300000 T tcp_retransmit_timer\n"
    "ffffffff81310000 T __tcp_retransmit_skb\n"
)
# Innermost first, as BCC's stack map walk yields them.
UDP_STACK = [0xFFFFFFFF81200010, 0xFFFFFFFF81100123, 0xFFFFFFFF81000042]
NFT_STACK = [0xFFFFFFFF81200010, 0xFFFFFFFFC0000100, 0xFFFFFFFF81000042]
TIMER_STACK = [0xFFFFFFFF81310001, 0xFFFFFFFF81300002]


def _c_struct_fields(header: str, name: str) -> list[str]:
    body = re.search(rf"struct {name} \{{(.*?)\}};", (BPF / header).read_text(), re.S).group(1)
    return re.findall(r"^\s*u\d+ (\w+);", body, re.M)


def test_stack_keys_follow_the_c_structs():
    assert list(DROP_STACK_KEY.names) == _c_struct_fields("drops.h", "drop_stack_key")
    assert list(RETRANSMIT_STACK_KEY.names) == _c_struct_fields("retransmits.h", "retransmit_stack_key")
    # With the stack map's generation (bpf/stacks.h: two maps per program, recycled).
    assert (DROP_STACK_KEY.itemsize, RETRANSMIT_STACK_KEY.itemsize) == (16, 12)


def test_stack_lost_slots_in_the_headers_order():
    text = (BPF / "stacks.h").read_text()
    slots = dict((name, int(value)) for name, value in re.findall(r"STACK_LOST_(\w+) = (\d+)", text))
    assert slots.pop("SLOTS") == len(STACK_LOST_SLOTS)
    names = [name.lower() for name, _ in sorted(slots.items(), key=lambda item: item[1])]
    assert tuple(names) == STACK_LOST_SLOTS


class CountingKallsyms:
    """KALLSYMS, counting lookups: how often an address list is symbolized."""

    def __init__(self, table: Kallsyms):
        self.table = table
        self.lookups = 0

    def lookup(self, address: int):
        self.lookups += 1
        return self.table.lookup(address)

    def symbolize(self, address: int) -> str:
        return self.table.symbolize(address)


def test_symbolizer_names_frames_outer_to_inner_once_per_address_list():
    table = CountingKallsyms(KALLSYMS)
    symbolizer = StackSymbolizer(table)
    assert symbolizer.frames(tuple(UDP_STACK)) == ("do_syscall_64", "udp_queue_rcv_one_skb", "sk_skb_reason_drop")
    assert symbolizer.frames(tuple(NFT_STACK)) == ("do_syscall_64", "nft_do_chain [nf_tables]", "sk_skb_reason_drop")
    looked_up = table.lookups
    assert symbolizer.frames(tuple(UDP_STACK)) == ("do_syscall_64", "udp_queue_rcv_one_skb", "sk_skb_reason_drop")
    assert table.lookups == looked_up, "an address list is symbolized once, whatever id it had"
    assert symbolizer.frames((0xFFFFFFFF00000000,)) == ("0xffffffff00000000",)
    assert symbolizer.frames(()) == (), "a stack the map no longer held"


def test_a_raw_tracepoint_stack_starts_at_the_function_that_fired_it():
    """Walked from the raw kfree_skb, a stack starts in the program and bpf_trace_run4 (and
    on some kernels __bpf_trace_kfree_skb): cut, as a tracepoint's stack never had them."""
    from profiler.kernel.stacks import without_tracing_frames

    walked = ("do_syscall_64", "udp_queue_rcv_one_skb", "sk_skb_reason_drop", "bpf_trace_run4",
              "bpf_prog_0123456789abcdef_raw_tracepoint__kfree_skb [bpf]")
    assert without_tracing_frames(walked) == ("do_syscall_64", "udp_queue_rcv_one_skb", "sk_skb_reason_drop")
    older = ("do_syscall_64", "kfree_skb", "__bpf_trace_kfree_skb", "bpf_trace_run2", "0xffffffffc0001234")
    assert without_tracing_frames(older) == ("do_syscall_64", "kfree_skb")
    # Only from the inner end: a drop inside another hook's program keeps the outer dispatch.
    nested = ("do_syscall_64", "bpf_trace_run2", "bpf_prog_1_other [bpf]", "kfree_skb", "bpf_trace_run4")
    assert without_tracing_frames(nested) == nested[:-1]
    assert without_tracing_frames(("do_syscall_64", "tcp_retransmit_skb")) == ("do_syscall_64", "tcp_retransmit_skb")
    table = Kallsyms.parse("ffffffff81000000 T do_syscall_64\nffffffff81001000 T sk_skb_reason_drop\n"
                           "ffffffff81002000 T bpf_trace_run4\n")
    # Innermost first, as the map holds them: the program (unnamed here), dispatch, the drop.
    walked_addresses = (0xFFFFFFFFC0000010, 0xFFFFFFFF81002010, 0xFFFFFFFF81001010, 0xFFFFFFFF81000010)
    assert StackSymbolizer(table).frames(walked_addresses) == ("do_syscall_64", "sk_skb_reason_drop")


def test_symbolizer_reloads_kallsyms_for_a_module_loaded_later():
    now = [0.0]
    tables = [Kallsyms.parse("ffffffff81000000 T do_syscall_64\n"), KALLSYMS]
    loads: list[int] = []

    def load() -> Kallsyms:
        loads.append(1)
        return tables[min(len(loads) - 1, 1)]

    shared = SharedKallsyms(load, clock=lambda: now[0])
    drops, retransmits = StackSymbolizer(shared=shared), StackSymbolizer(shared=shared)
    drops.frames((0x1000,))
    retransmits.kallsyms()
    assert len(loads) == 1, "one parse for every symbolizer of the process"
    now[0] = KALLSYMS_RELOAD_S / 2
    drops.frames((0x2000,))
    assert len(loads) == 1, "not reloaded more often than KALLSYMS_RELOAD_S"
    now[0] = KALLSYMS_RELOAD_S * 2
    assert retransmits.frames((0xFFFFFFFFC0000100,)) == ("nft_do_chain [nf_tables]",)
    assert len(loads) == 2 and drops.kallsyms() is KALLSYMS


def fold(key, rows: list[tuple[tuple, list[int], int, int]]) -> StackFold:
    """[(key fields, addresses innermost first, events, walks)] → one fold's stacks."""
    return StackFold(np.array([k for k, *_ in rows], key), np.array([(e, w) for _, _, e, w in rows], STACK_COUNT),
                     tuple(tuple(a) for _, a, _, _ in rows))


def drop_counts(stacks: list[tuple[int, int, int, list[int], int, int]], lost: dict[str, int] | None = None,
                sampling: StackSampling | None = None) -> DropCounts:
    """Drop counts with only stacks: [(netns, reason, stack id, addresses, events, walks)] of one fold."""
    empty = np.zeros(0, COUNT)
    return DropCounts(
        netns_reasons=np.zeros(0, NETNS_REASON_KEY), per_netns_reason=empty,
        cpu_reasons=np.zeros(0, REASON_KEY), per_cpu_reason=np.zeros((0, 2), COUNT),
        sites=np.zeros(0, SITE_KEY), per_site=empty, listeners=np.zeros(0, LISTEN_KEY), per_listener=empty,
        rcvqueue_netns=np.zeros(0, DROP_NETNS_KEY), per_rcvqueue_netns=empty,
        uncounted=dict.fromkeys(UNCOUNTED_SLOTS, 0),
        stacks=fold(DROP_STACK_KEY, [((n, r, s, 0), a, e, w) for n, r, s, a, e, w in stacks]),
        stacks_lost=MappingProxyType({**dict.fromkeys(STACK_LOST_SLOTS, 0), **(lost or {})}),
        sampling=sampling or StackSampling(),
    )


class FakeDropProbe:
    name = "skb_drops"

    def __init__(self, reads: list[DropCounts]):
        self.reads = list(reads)
        self.rcvqueue_status = ProbeStatus("rcvqueue_full", True, "raw_tracepoint:sock_rcvqueue_full")
        self.stacks_status = ProbeStatus("drop_stacks", True, "bpf_get_stackid at tracepoint:skb:kfree_skb")

    def attach(self, loader) -> ProbeStatus:
        self.reason_names = loader.layout.drop_reasons  # as DropProbe on a kernel with drop reasons
        return ProbeStatus(self.name, True, "tracepoint:skb:kfree_skb")

    def read(self, flush: bool = False) -> DropCounts:
        return self.reads.pop(0)

    def detach(self) -> None:
        pass


def collect(source) -> object:
    frame = SnapshotFrame(0.0, lambda inode: f"pod-{inode}")
    source.collect(frame)
    return frame.freeze(1.0)


def test_drop_source_writes_each_folds_drops_per_stack():
    probe = FakeDropProbe([
        drop_counts([(100, 6, 1, UDP_STACK, 600, 3)],
                    sampling=StackSampling(walks=3, walk_ns=90_000, skipped_spacing=597, pending=5)),
        # The same stack under two ids (one per generation: a straggler and a new walk) is one sample.
        drop_counts([(100, 6, 1, UDP_STACK, 1, 1), (100, 6, 7, UDP_STACK, 390, 2), (200, 40, 2, NFT_STACK, 3, 3)],
                    lost={"no_stack_id": 4, "counter_map_full": 1},
                    sampling=StackSampling(walks=9, walk_ns=200_000, skipped_spacing=985, skipped_budget=4, pending=2)),
        drop_counts([], lost={"no_stack_id": 4, "counter_map_full": 1},
                    sampling=StackSampling(walks=9, walk_ns=200_000, skipped_spacing=985, skipped_budget=4, pending=2)),
    ])
    source = DropSource(probe, kallsyms=KALLSYMS)
    statuses = source.attach(SimpleNamespace(layout=SimpleNamespace(drop_reasons=REASONS)))
    assert [s.name for s in statuses] == ["skb_drops", "rcvqueue_full", "drop_stacks"]
    first, second, third = collect(source), collect(source), collect(source)
    (stack,) = first.stacks
    assert (stack.pod, stack.netns, stack.reason, stack.count, stack.samples) == (
        "pod-100", 100, "SOCKET_RCVBUFF", 600, 3)
    assert stack.frames == ("do_syscall_64", "udp_queue_rcv_one_skb", "sk_skb_reason_drop")
    assert sorted((s.netns, s.reason, s.count, s.samples) for s in second.stacks) == [
        (100, "SOCKET_RCVBUFF", 391, 3), (200, "TCP_LISTEN_OVERFLOW", 3, 3)]
    assert dict(second.lost) == {"drop_stacks_no_stack_id": 4, "drop_stacks_counter_map_full": 1}
    # Walks skipped are sampling, not loss: their drops are in a later walk's weight.
    assert not any("stacks" in k for k in second.ignored)
    assert dict(first.stack_sampling) == {"drop_walks": 3, "drop_walk_ns": 90_000, "drop_skipped_spacing": 597,
                                          "drop_skipped_budget": 0, "drop_pending_now": 5, "drop_share_ppm_now": 5000}
    assert (second.stack_sampling["drop_walks"], second.stack_sampling["drop_skipped_budget"],
            second.stack_sampling["drop_pending_now"]) == (6, 4, 2)
    assert third.stacks == () and dict(third.lost) == {} and third.stack_sampling["drop_walks"] == 0


class FakeRetransmitProbe:
    name = "tcp_retransmits"

    def __init__(self, reads: list[RetransmitCounts]):
        self.reads = list(reads)
        self.stacks_status = ProbeStatus("retransmit_stacks", True, "bpf_get_stackid at tracepoint:tcp:tcp_retransmit_skb")

    def attach(self, loader) -> ProbeStatus:
        return ProbeStatus(self.name, True, "tracepoint:tcp:tcp_retransmit_skb")

    def read(self, flush: bool = False) -> RetransmitCounts:
        return self.reads.pop(0)

    def detach(self) -> None:
        pass


def retransmit_counts(stacks: list[tuple[int, int, list[int], int, int]], lost: int = 0) -> RetransmitCounts:
    return RetransmitCounts(
        np.zeros(0, NETNS_KEY), np.zeros(0, COUNTS), np.zeros(0, FLOW_KEY), np.zeros(0, COUNTS), 0,
        stacks=fold(RETRANSMIT_STACK_KEY, [((n, s, 1), a, e, w) for n, s, a, e, w in stacks]),
        stacks_lost=MappingProxyType({"no_stack_id": lost, "counter_map_full": 0}),
        sampling=StackSampling(),
    )


def test_retransmit_source_writes_retransmits_per_stack():
    probe = FakeRetransmitProbe([retransmit_counts([(7, 5, TIMER_STACK, 10, 10)]),
                                 retransmit_counts([(7, 5, TIMER_STACK, 15, 2)], lost=2)])
    source = RetransmitSource(probe, kallsyms=KALLSYMS)
    assert [s.name for s in source.attach(None)] == ["tcp_retransmits", "retransmit_stacks"]
    first, second = collect(source), collect(source)
    assert [(s.pod, s.reason, s.frames, s.count, s.samples) for s in first.stacks] == [
        ("pod-7", RETRANSMIT_STACK_REASON, ("tcp_retransmit_timer", "__tcp_retransmit_skb"), 10, 10)]
    assert [(s.count, s.samples) for s in second.stacks] == [(15, 2)]
    assert dict(second.lost) == {"retransmit_stacks_no_stack_id": 2}


class FakeNetns:
    def __init__(self, samples: list[list[ListenerRow]]):
        self.samples = list(samples)

    def listeners(self) -> list[ListenerRow]:
        return self.samples.pop(0) if self.samples else []

    def somaxconn(self) -> int | None:
        return 128

    def close(self) -> None:
        pass


def row(queue: int, inode: int = 1, port: int = 8080) -> ListenerRow:
    return ListenerRow(socket.AF_INET, "0.0.0.0", port, queue, 64, inode)


def test_listener_sampler_keeps_a_depth_histogram_of_its_samples():
    # Depths 0, 1, 3, 5, 65 (full), and a pass where two reuseport sockets hold 2 and 9:
    # one sample per pass, of the deeper one.
    pod = FakeNetns([[row(0)], [row(1)], [row(3)], [row(5)], [row(65)], [row(2, inode=1), row(9, inode=2)]])
    sampler = ListenerSampler(0.1, idle_period_s=1.0, open_netns=lambda path: pod)
    sampler.track({11: Path("11")})
    for second in range(6):
        sampler.sample_once(now=second)
    (listener,) = sampler.drain()[11].listeners
    # Buckets: [0,1) [1,2) [2,4) [4,8) [8,16) [16,32) [32,64) [64,128)
    assert listener.depth_log2 == (1, 1, 1, 1, 1, 0, 0, 1)
    assert sum(listener.depth_log2) == listener.samples == 6
