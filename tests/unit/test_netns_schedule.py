"""The per-netns read schedule: active pods every interval, idle pods in turn on a budget,
every pod on a capture's final interval — alone and in the two readers that use it."""
from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from types import SimpleNamespace

from profiler.sampler import Sampler
from profiler.snapshot import SnapshotFrame
from profiler.sources.listen import NetnsCounterDeltas
from profiler.sources.netns_schedule import IDLE_READS_PER_INTERVAL, NetnsSchedule


def batch_of(read_one: Callable[..., object]) -> Callable[..., dict[int, object]]:
    """A per-path reader as the sources' batch reader (inode → reading or exception), read
    here: for fixtures, which need no namespace."""

    def read(paths: Mapping[int, Path], *args) -> dict[int, object]:
        results: dict[int, object] = {}
        for inode, path in paths.items():
            try:
                results[inode] = read_one(path, *args)
            except Exception as exc:
                results[inode] = exc
        return results

    return read


def pods(*inodes: int) -> dict[int, Path]:
    return {inode: Path(f"/run/netns/pod{inode}") for inode in inodes}


def interval(schedule: NetnsSchedule, paths: Mapping[int, Path], moving: set[int] = frozenset(),
             read_all: bool = False) -> set[int]:
    """One pass as a reader makes it: the pods read, of which `moving` had counters that moved."""
    due = schedule.due(paths, read_all)
    assert set(due) <= set(paths) and all(due[inode] == paths[inode] for inode in due)
    schedule.record(due, moved=[inode for inode in due if inode in moving])
    return set(due)


def test_new_pods_are_read_at_first_sight_whatever_the_budget():
    schedule = NetnsSchedule(idle_reads_per_interval=2)
    assert interval(schedule, pods(*range(10))) == set(range(10)), "baselines for every pod"
    assert len(interval(schedule, pods(*range(10)))) == 2
    assert 99 in interval(schedule, pods(*range(10), 99)), "a pod that appears is read at once"


def test_with_no_more_idle_pods_than_the_budget_every_pod_is_read_every_interval():
    schedule = NetnsSchedule()
    everyone = pods(*range(IDLE_READS_PER_INTERVAL))
    for _ in range(5):
        assert interval(schedule, everyone) == set(everyone)


def test_hot_pods_every_interval_and_idle_ones_within_the_budget():
    budget, idle = 8, 100
    schedule = NetnsSchedule(idle_reads_per_interval=budget)
    hot = {1000, 1001, 1002}
    everyone = pods(*range(idle), *hot)
    interval(schedule, everyone, moving=hot)  # baselines; the hot pods' counters move from now on
    seen_idle: set[int] = set()
    for _ in range(math.ceil(idle / budget)):
        read = interval(schedule, everyone, moving=hot)
        assert hot <= read, "a pod whose counters moved is read the next interval too"
        assert len(read - hot) == budget
        seen_idle |= read - hot
    assert seen_idle == set(range(idle)), "every idle pod read within ceil(idle / budget) intervals"


def test_a_pod_whose_counters_stop_moving_goes_back_to_the_round_robin():
    schedule = NetnsSchedule(idle_reads_per_interval=1)
    everyone = pods(1, 2, 3, 4)
    interval(schedule, everyone)
    # Pod 4's counters move from now on; it turns hot at its first read in the round-robin.
    first_read = next((i for i in range(len(everyone)) if 4 in interval(schedule, everyone, moving={4})), None)
    assert first_read is not None
    assert 4 in interval(schedule, everyone)    # read as hot; its counters did not move
    reads_of_4 = sum(4 in interval(schedule, everyone) for _ in range(len(everyone)))
    assert reads_of_4 == 1, "quiet again: read once in every ceil(4 idle / budget 1) intervals"


def test_heat_reads_a_pod_next_interval_whatever_its_counters_did():
    schedule = NetnsSchedule(idle_reads_per_interval=0)
    everyone = pods(1, 2, 3)
    interval(schedule, everyone)
    assert interval(schedule, everyone) == set()
    schedule.heat([2, 77])                     # 77: not a pod (any more); ignored
    assert interval(schedule, everyone) == {2}
    assert interval(schedule, everyone) == set(), "heat lasts until the pod is read"


def test_read_all_reads_every_pod():
    schedule = NetnsSchedule(idle_reads_per_interval=1)
    everyone = pods(*range(20))
    interval(schedule, everyone)
    assert interval(schedule, everyone, read_all=True) == set(everyone)


def test_pods_no_longer_listed_are_forgotten():
    schedule = NetnsSchedule(idle_reads_per_interval=0)
    interval(schedule, pods(1, 2, 3), moving={2})
    assert interval(schedule, pods(1, 3)) == set(), "2 is gone, and nothing else is due"
    # Forgotten, not just skipped: listed again (a new netns reusing the inode), it is new.
    assert interval(schedule, pods(1, 2, 3)) == {2}
    for _ in range(3):
        interval(schedule, pods(*range(100, 110)))
    assert len(schedule._by_last_read) == 10 and schedule._hot <= set(range(100, 110))


def test_an_idle_pod_counted_between_its_reads_reports_it_all_at_its_next_read():
    counters = {inode: {"TcpExt.ListenOverflows": 0} for inode in range(4)}
    deltas = NetnsCounterDeltas(read_counters=batch_of(lambda path: counters[int(path.name)]),
                                schedule=NetnsSchedule(idle_reads_per_interval=1))
    everyone = {inode: Path(str(inode)) for inode in counters}
    assert deltas.update(everyone) == {}                  # baselines
    counters[3] = {"TcpExt.ListenOverflows": 5}
    reported = {}
    for _ in range(len(everyone)):                        # 3 is read within 4 intervals…
        for inode, moved in deltas.update(everyone).items():
            reported[inode] = reported.get(inode, 0) + moved["TcpExt.ListenOverflows"]
    assert reported == {3: 5}                             # …once, with everything it counted
    counters[0] = {"TcpExt.ListenOverflows": 2}
    counters[3] = {"TcpExt.ListenOverflows": 6}
    assert deltas.update(everyone, read_all=True) == {0: {"TcpExt.ListenOverflows": 2},
                                                      3: {"TcpExt.ListenOverflows": 1}}


def test_a_vanished_pod_is_forgotten_by_the_counter_deltas():
    counters = {1: {"Tcp.OutSegs": 10}, 2: {"Tcp.OutSegs": 10}}
    deltas = NetnsCounterDeltas(read_counters=batch_of(lambda path: counters[int(path.name)]))
    deltas.update({1: Path("1"), 2: Path("2")})
    deltas.update({1: Path("1")})
    counters[2] = {"Tcp.OutSegs": 50}                     # a new netns reusing the inode
    assert deltas.update({1: Path("1"), 2: Path("2")}) == {}, "first sight again: a baseline"


def test_the_sampler_tells_the_sources_which_interval_is_final():
    class FinalFlagSource:
        name = "final_flag"
        seen: list[bool] = []

        def attach(self, loader):
            return []

        def collect(self, frame: SnapshotFrame) -> None:
            self.seen.append(frame.final)

        def detach(self) -> None:
            pass

    source = FinalFlagSource()
    sampler = Sampler(SimpleNamespace(label=str), [source])
    sampler.attach(loader=None)
    # attach() reads once to open the window (tests/unit/test_sampler_window.py): not final.
    sampler.sample()
    sampler.sample(final=True)
    assert source.seen == [False, False, True]
