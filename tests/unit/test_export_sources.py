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
from profiler.kernel.stacks import KALLSYMS_RELOAD_S, STACK_LOST_SLOTS, SharedKallsyms, StackSymbolizer
from profiler.probes.base import ProbeStatus
from profiler.probes.drops import (
    COUNT, LISTEN_KEY, NETNS_KEY as DROP_NETNS_KEY, NETNS_REASON_KEY, REASON_KEY, SITE_KEY,
    STACK_KEY as DROP_STACK_KEY, UNCOUNTED_SLOTS, DropCounts,
)
from profiler.probes.retransmits import (
    COUNTS, FLOW_KEY, NETNS_KEY, STACK_COUNT, STACK_KEY as RETRANSMIT_STACK_KEY, RetransmitCounts,
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
    assert (DROP_STACK_KEY.itemsize, RETRANSMIT_STACK_KEY.itemsize) == (12, 8)


def test_stack_lost_slots_in_the_headers_order():
    text = (BPF / "stacks.h").read_text()
    slots = dict((name, int(value)) for name, value in re.findall(r"STACK_LOST_(\w+) = (\d+)", text))
    assert slots.pop("SLOTS") == len(STACK_LOST_SLOTS)
    names = [name.lower() for name, _ in sorted(slots.items(), key=lambda item: item[1])]
    assert tuple(names) == STACK_LOST_SLOTS


class Walks:
    def __init__(self, stacks: dict[int, list[int]]):
        self.stacks = stacks
        self.calls: list[int] = []

    def __call__(self, stack_id: int) -> list[int]:
        self.calls.append(stack_id)
        return self.stacks[stack_id]


def test_symbolizer_names_frames_outer_to_inner_once_per_stack():
    walk = Walks({1: UDP_STACK, 2: NFT_STACK, 3: [0xFFFFFFFF00000000]})
    symbolizer = StackSymbolizer(walk, KALLSYMS)
    assert symbolizer.frames(1) == ("do_syscall_64", "udp_queue_rcv_one_skb", "sk_skb_reason_drop")
    assert symbolizer.frames(2) == ("do_syscall_64", "nft_do_chain [nf_tables]", "sk_skb_reason_drop")
    assert symbolizer.frames(1) == symbolizer.frames(1)
    assert walk.calls == [1, 2], "a stack id is read from the kernel once"
    assert symbolizer.frames(3) == ("0xffffffff00000000",)
    assert symbolizer.frames(99) == (), "an id the map does not hold"


def test_symbolizer_reloads_kallsyms_for_a_module_loaded_later():
    now = [0.0]
    tables = [Kallsyms.parse("ffffffff81000000 T do_syscall_64\n"), KALLSYMS]
    loads: list[int] = []

    def load() -> Kallsyms:
        loads.append(1)
        return tables[min(len(loads) - 1, 1)]

    shared = SharedKallsyms(load, clock=lambda: now[0])
    walk = Walks({1: [0x1000], 2: [0x2000], 3: [0xFFFFFFFFC0000100]})
    drops, retransmits = StackSymbolizer(walk, shared=shared), StackSymbolizer(walk, shared=shared)
    drops.frames(1)
    retransmits.kallsyms()
    assert len(loads) == 1, "one parse for every symbolizer of the process"
    now[0] = KALLSYMS_RELOAD_S / 2
    drops.frames(2)
    assert len(loads) == 1, "not reloaded more often than KALLSYMS_RELOAD_S"
    now[0] = KALLSYMS_RELOAD_S * 2
    assert retransmits.frames(3) == ("nft_do_chain [nf_tables]",)
    assert len(loads) == 2 and drops.kallsyms() is KALLSYMS


def drop_counts(stacks: list[tuple[int, int, int, int]], lost: dict[str, int] | None = None) -> DropCounts:
    """Cumulative drop counts with only stacks: [(netns, reason, stack id, count)]."""
    empty = np.zeros(0, COUNT)
    return DropCounts(
        netns_reasons=np.zeros(0, NETNS_REASON_KEY), per_netns_reason=empty,
        cpu_reasons=np.zeros(0, REASON_KEY), per_cpu_reason=np.zeros((0, 2), COUNT),
        sites=np.zeros(0, SITE_KEY), per_site=empty, listeners=np.zeros(0, LISTEN_KEY), per_listener=empty,
        rcvqueue_netns=np.zeros(0, DROP_NETNS_KEY), per_rcvqueue_netns=empty,
        uncounted=dict.fromkeys(UNCOUNTED_SLOTS, 0),
        stack_keys=np.array([(n, r, s) for n, r, s, _ in stacks], DROP_STACK_KEY),
        per_stack=np.array([(c,) for *_, c in stacks], COUNT),
        stacks_lost=MappingProxyType({**dict.fromkeys(STACK_LOST_SLOTS, 0), **(lost or {})}),
    )


class FakeDropProbe:
    name = "skb_drops"

    def __init__(self, reads: list[DropCounts], stacks: dict[int, list[int]]):
        self.reads = list(reads)
        self.walk = Walks(stacks)
        self.rcvqueue_status = ProbeStatus("rcvqueue_full", True, "raw_tracepoint:sock_rcvqueue_full")
        self.stacks_status = ProbeStatus("drop_stacks", True, "bpf_get_stackid at tracepoint:skb:kfree_skb")

    def attach(self, loader) -> ProbeStatus:
        return ProbeStatus(self.name, True, "tracepoint:skb:kfree_skb")

    def read(self) -> DropCounts:
        return self.reads.pop(0)

    def stack_addresses(self, stack_id: int) -> list[int]:
        return self.walk(stack_id)

    def detach(self) -> None:
        pass


def collect(source) -> object:
    frame = SnapshotFrame(0.0, lambda inode: f"pod-{inode}")
    source.collect(frame)
    return frame.freeze(1.0)


def test_drop_source_writes_each_intervals_drops_per_stack():
    probe = FakeDropProbe([
        drop_counts([(100, 6, 1, 600)]),
        drop_counts([(100, 6, 1, 991), (200, 40, 2, 3)], lost={"no_stack_id": 4, "counter_map_full": 1,
                                                               "rate_limited": 9}),
        drop_counts([(100, 6, 1, 991), (200, 40, 2, 3)], lost={"no_stack_id": 4, "counter_map_full": 1,
                                                               "rate_limited": 9}),
    ], {1: UDP_STACK, 2: NFT_STACK})
    source = DropSource(probe, kallsyms=KALLSYMS)
    statuses = source.attach(SimpleNamespace(layout=SimpleNamespace(drop_reasons=REASONS)))
    assert [s.name for s in statuses] == ["skb_drops", "rcvqueue_full", "drop_stacks"]
    first, second, third = collect(source), collect(source), collect(source)
    (stack,) = first.stacks
    assert (stack.pod, stack.netns, stack.reason, stack.count) == ("pod-100", 100, "SOCKET_RCVBUFF", 600)
    assert stack.frames == ("do_syscall_64", "udp_queue_rcv_one_skb", "sk_skb_reason_drop")
    assert sorted((s.netns, s.reason, s.count) for s in second.stacks) == [
        (100, "SOCKET_RCVBUFF", 391), (200, "TCP_LISTEN_OVERFLOW", 3)]
    assert dict(second.lost) == {"drop_stacks_no_stack_id": 4, "drop_stacks_counter_map_full": 1}
    # Past the stack budget is a deliberate limit, not a full map: the drops are all counted.
    assert second.ignored["drop_stacks_rate_limited"] == 9
    assert third.stacks == () and dict(third.lost) == {} and "drop_stacks_rate_limited" not in third.ignored
    assert probe.walk.calls == [1, 2]


class FakeRetransmitProbe:
    name = "tcp_retransmits"

    def __init__(self, reads: list[RetransmitCounts], stacks: dict[int, list[int]]):
        self.reads = list(reads)
        self.walk = Walks(stacks)
        self.stacks_status = ProbeStatus("retransmit_stacks", True, "bpf_get_stackid at tracepoint:tcp:tcp_retransmit_skb")

    def attach(self, loader) -> ProbeStatus:
        return ProbeStatus(self.name, True, "tracepoint:tcp:tcp_retransmit_skb")

    def read(self) -> RetransmitCounts:
        return self.reads.pop(0)

    def stack_addresses(self, stack_id: int) -> list[int]:
        return self.walk(stack_id)

    def detach(self) -> None:
        pass


def retransmit_counts(stacks: list[tuple[int, int, int]], lost: int = 0) -> RetransmitCounts:
    return RetransmitCounts(
        np.zeros(0, NETNS_KEY), np.zeros(0, COUNTS), np.zeros(0, FLOW_KEY), np.zeros(0, COUNTS), 0,
        stack_keys=np.array([(n, s) for n, s, _ in stacks], RETRANSMIT_STACK_KEY),
        per_stack=np.array([(c,) for *_, c in stacks], STACK_COUNT),
        stacks_lost=MappingProxyType({"no_stack_id": lost, "counter_map_full": 0}),
    )


def test_retransmit_source_writes_retransmits_per_stack():
    probe = FakeRetransmitProbe([retransmit_counts([(7, 5, 10)]), retransmit_counts([(7, 5, 25)], lost=2)],
                                {5: TIMER_STACK})
    source = RetransmitSource(probe, kallsyms=KALLSYMS)
    assert [s.name for s in source.attach(None)] == ["tcp_retransmits", "retransmit_stacks"]
    first, second = collect(source), collect(source)
    assert [(s.pod, s.reason, s.frames, s.count) for s in first.stacks] == [
        ("pod-7", RETRANSMIT_STACK_REASON, ("tcp_retransmit_timer", "__tcp_retransmit_skb"), 10)]
    assert [s.count for s in second.stacks] == [15]
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
