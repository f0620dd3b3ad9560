"""Stack sampling's user-space side without a kernel (bpf/stacks.h): the budget's macros,
the generation flip of the stack maps (stragglers, clearing, the capture's tail), and the
capture's `stack_sampling` section."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from profiler.kernel.stacks import (
    STACK_COUNT, STACK_KEY_STATE, STACK_SAMPLER, StackGenerations, StackSampling, StackTail, stack_sampling_cflags,
    stack_sampling_json,
)
from profiler.probes.drops import DROP_COUNT, DROP_KEY, STACK_KEY, drop_stack_tail

BPF = Path(__file__).resolve().parents[2] / "bpf"


def _c_fields(header: str, name: str) -> list[str]:
    body = re.search(rf"struct {name} \{{(.*?)\}};", (BPF / header).read_text(), re.S).group(1)
    return re.findall(r"^\s*[su]\d+ (\w+);", body, re.M)


def test_sampler_layouts_follow_the_c_structs():
    assert list(STACK_SAMPLER.names) == _c_fields("stacks.h", "stack_sampler")
    assert list(STACK_KEY_STATE.names) == _c_fields("stacks.h", "stack_key_state")
    assert list(STACK_COUNT.names) == _c_fields("stacks.h", "stack_count")
    # struct drop_count: the count, then its struct stack_key_state.
    assert list(DROP_COUNT.names) == ["count"] + [f"stack_{n}" if not n.startswith("stack") else n
                                                  for n in ("walked_ns", "pending", "stack_id", "epoch")]
    assert DROP_COUNT.itemsize == 8 + STACK_KEY_STATE.itemsize == 32


def test_the_share_becomes_the_programs_macros():
    flags = stack_sampling_cflags(0.005)
    assert "-DNETPROF_STACK_SHARE_PPM=5000ULL" in flags
    assert "-DNETPROF_STACK_CREDIT_MAX_NS=1000000LL" in flags, "200 ms of a 0.5% share: 1 ms of walks"
    assert "-DNETPROF_STACK_SPACING_NS=10000000ULL" in flags
    assert "-DNETPROF_STACK_SHARE_PPM=20000ULL" in stack_sampling_cflags(0.02)
    for bad in (0, -0.1, 0.9):
        with pytest.raises(ValueError):
            stack_sampling_cflags(bad)


class FakeKey:
    @staticmethod
    def from_buffer_copy(raw: bytes) -> bytes:
        return raw


class FakeCounters:
    """The counter map: key bytes → (events, samples); read like a MapReader."""

    Key = FakeKey

    def __init__(self):
        self.rows: dict[bytes, tuple[int, int]] = {}

    def add(self, netns: int, stack_id: int, generation: int, events: int, samples: int = 1) -> None:
        key = np.array([(netns, 6, stack_id, generation)], STACK_KEY)[0].tobytes()
        before = self.rows.get(key, (0, 0))
        self.rows[key] = (before[0] + events, before[1] + samples)

    def read(self):
        keys = np.frombuffer(b"".join(self.rows), STACK_KEY).copy() if self.rows else np.zeros(0, STACK_KEY)
        return keys, np.array(list(self.rows.values()), STACK_COUNT).reshape(-1)

    def __delitem__(self, key: bytes) -> None:
        del self.rows[key]


class FakeTraces:
    def __init__(self):
        self.stacks: dict[int, list[int]] = {}
        self.walks = 0

    def walk(self, stack_id: int):
        self.walks += 1
        if stack_id not in self.stacks:
            raise KeyError(stack_id)
        return iter(self.stacks[stack_id])

    def clear(self) -> None:
        self.stacks.clear()


class FakeArray:
    Key = int
    Leaf = int

    def __init__(self):
        self.value = 0

    def __setitem__(self, key, value) -> None:
        self.value = value


def generations():
    counters, traces, array = FakeCounters(), (FakeTraces(), FakeTraces()), FakeArray()
    return StackGenerations(counters, traces, array, STACK_KEY, reader=counters), counters, traces, array


def as_rows(fold) -> list[tuple[int, tuple[int, ...], int, int]]:
    return sorted((int(k["netns_inode"]), a, int(c["events"]), int(c["samples"]))
                  for k, c, a in zip(fold.keys, fold.counts, fold.addresses))


def test_each_fold_reads_the_active_generation_then_flips_and_clears_the_other():
    gens, counters, traces, array = generations()
    assert (array.value, gens.active) == (1, 1), "the programs see the first epoch at attach"
    traces[1].stacks[3] = [0xA, 0xB]
    counters.add(100, 3, 1, events=600, samples=3)
    fold, given = gens.fold()
    assert as_rows(fold) == [(100, (0xA, 0xB), 600, 3)] and given == 0
    assert (array.value, gens.active) == (2, 0)
    # A program that read epoch 1 just before the flip (a straggler), and new walks in 0.
    counters.add(100, 3, 1, events=5, samples=1)
    traces[0].stacks[3] = [0xC]          # the same id in the other map is another stack
    counters.add(100, 3, 0, events=40, samples=2)
    fold, _ = gens.fold()
    assert as_rows(fold) == [(100, (0xA, 0xB), 5, 1), (100, (0xC,), 40, 2)]
    # Generation 1 was read in full: cleared before the programs get it back.
    assert not traces[1].stacks and all(np.frombuffer(k, STACK_KEY)["generation"][0] == 0 for k in counters.rows)
    assert array.value == 3 and gens.active == 1
    fold, _ = gens.fold()
    assert as_rows(fold) == [], "nothing new: generation 0's rows were all read before"
    assert not counters.rows and not traces[0].stacks


def test_many_flips_never_fill_a_map_and_lose_nothing():
    gens, counters, traces, _ = generations()
    total = 0
    for interval in range(1000):
        generation = gens.active
        for stack_id in range(5):
            traces[generation].stacks[stack_id] = [0x1000 + stack_id]
            counters.add(7, stack_id, generation, events=interval + stack_id + 1)
            total += interval + stack_id + 1
        if interval % 3 == 0:   # now and then, a straggler in the generation just left
            traces[1 - generation].stacks.setdefault(9, [0x9])
            counters.add(7, 9, 1 - generation, events=2)
            total += 2
        fold, _ = gens.fold()
        total -= int(fold.counts["events"].sum())
        assert len(counters.rows) <= 6 and len(traces[0].stacks) + len(traces[1].stacks) <= 6
    fold, _ = gens.fold()
    total -= int(fold.counts["events"].sum())
    assert total == 0


def test_the_tail_of_a_capture_goes_to_each_keys_last_stack_while_its_map_holds_it():
    gens, counters, traces, array = generations()
    traces[1].stacks[4] = [0xD]
    counters.add(100, 4, 1, events=1)
    gens.fold()                            # epoch 2 now; epoch 1's map still holds stack 4
    keys = np.array([(100, 6, 4, 1), (200, 6, 8, 1)], STACK_KEY)
    tail = StackTail(keys, np.array([1, 1], np.uint32), np.array([990, 5]))
    fold, given = gens.fold(tail)
    # Stack 8 was never in the map: its 5 stay pending.
    assert as_rows(fold) == [(100, (0xD,), 990, 0)] and given == 990
    old = StackTail(keys[:1], np.array([1], np.uint32), np.array([7]))
    assert gens.fold(old)[1] == 0, "epoch 1's map was cleared: its ids mean nothing now"


def test_drop_tail_reads_each_cpus_pending_and_last_stack():
    keys = np.array([(0xFFFF0001, 100, 6), (0xFFFF0002, 200, 40)], DROP_KEY)
    per_cpu = np.zeros((2, 2), DROP_COUNT)
    per_cpu[0, 1] = (50, 123, 17, 4, 9)    # CPU 1: 17 pending since stack 4 of epoch 9
    per_cpu[1, 0] = (3, 456, 0, 2, 9)      # nothing pending
    tail = drop_stack_tail(keys, per_cpu)
    assert [tuple(int(v) for v in k) for k in tail.keys] == [(100, 6, 4, 1)]
    assert list(tail.epochs) == [9] and list(tail.pending) == [17]


def test_sampling_counters_are_per_interval_and_pending_is_a_level():
    first = StackSampling(0.005, walks=10, walk_ns=300_000, skipped_spacing=90, skipped_budget=1, pending=4)
    second = StackSampling(0.005, walks=12, walk_ns=360_000, skipped_spacing=190, skipped_budget=1, pending=2)
    assert second.counters(first, "drop") == {
        "drop_walks": 2, "drop_walk_ns": 60_000, "drop_skipped_spacing": 100, "drop_skipped_budget": 0,
        "drop_pending_now": 2, "drop_share_ppm_now": 5000}


def test_capture_section_scales_walks_to_events():
    total = {"drop_walks": 200, "drop_walk_ns": 6_000_000, "drop_skipped_spacing": 99_000, "drop_skipped_budget": 800,
             "drop_pending_now": 0, "drop_share_ppm_now": 5000,
             "retransmit_walks": 10, "retransmit_walk_ns": 200_000, "retransmit_skipped_spacing": 0,
             "retransmit_skipped_budget": 0, "retransmit_pending_now": 3, "retransmit_share_ppm_now": 5000}
    section = stack_sampling_json(total, {"drop": 99_000 + 1_000, "retransmit": 10}, duration_s=10.0, cpus=2)
    assert section["programs"]["drop"]["events"] == 100_000 and section["programs"]["drop"]["ratio"] == 0.002
    assert section["programs"]["retransmit"]["ratio"] == 1.0 and section["pending"] == 3
    # Skipped: events their walks stood for, less the walks (plus what is still pending).
    assert (section["walks"], section["skipped"], section["share"]) == (210, 99_800 + 3, 0.005)
    assert section["walk_cpu_share"] == round(6_200_000 / (10.0 * 1e9 * 2), 6)
    assert stack_sampling_json({}, {}, 1.0, 2) is None
