"""Runs of netprof's BPF programs the kernel skipped (recursion_misses in the program's
fdinfo) are lost events of the interval they happened in, shown wherever lost events are:
the capture, the report, Prometheus (export and serve) and the TUI's probe panel.

The fdinfo texts are recorded from a drops program on 6.18, before and during a storm."""
from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from profiler.capture import Capture
from profiler.cost import MeteredLoader, RecursionMissCounter, recursion_miss_key
from profiler.exports.prometheus import exposition_text
from profiler.kernel.features import KernelInfo
from profiler.pods import PodDirectory
from profiler.probes.base import ProbeStatus
from profiler.report import print_report
from profiler.sampler import Sampler
from profiler.serve import ServedCapture
from profiler.snapshot import SnapshotFrame
from tests.export_readers import read_prometheus, sample_value
from tui.screens.probes import render_probes

KERNEL = KernelInfo("6.18.44", btf=True, kprobes=False, tracefs="/sys/kernel/tracing", headers=None)
KFREE_SKB = "tracepoint:skb:kfree_skb"
DROPS_KEY = recursion_miss_key("drops", KFREE_SKB)


def prog_fdinfo(prog_id: int, run_cnt: int, recursion_misses: int) -> str:
    # The layout of /proc/<pid>/fdinfo/<prog fd> on 6.18 (statistics off: run_time_ns 0).
    return (f"pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\nprog_type:\t5\nprog_jited:\t1\n"
            f"prog_tag:\t59f4a931744dcdc6\nmemlock:\t4096\nprog_id:\t{prog_id}\nrun_time_ns:\t0\n"
            f"run_cnt:\t{run_cnt}\nrecursion_misses:\t{recursion_misses}\nverified_insns:\t412\n")


class FakeFunction:
    def __init__(self, fd: int):
        self.fd = fd


class FakeBpf:
    def __init__(self, funcs: dict):
        self.funcs = funcs


class RecordedProc:
    """A /proc whose fdinfo files the test rewrites between intervals."""

    def __init__(self, root: Path):
        self.root = root
        (root / "self/fdinfo").mkdir(parents=True)

    def set(self, fd: int, text: str) -> None:
        (self.root / "self/fdinfo" / str(fd)).write_text(text)


def loaded_programs() -> list[tuple[str, object]]:
    return [("drops", FakeBpf({b"tracepoint__skb__kfree_skb": FakeFunction(21)})),
            ("softirq", FakeBpf({b"tracepoint__irq__softirq_entry": FakeFunction(22)}))]


def test_misses_are_counted_per_interval_and_program(tmp_path):
    proc = RecordedProc(tmp_path)
    counter = RecursionMissCounter(loaded_programs(), proc=tmp_path)
    proc.set(21, prog_fdinfo(1590, 0, 0))
    proc.set(22, prog_fdinfo(1591, 0, 0))
    assert counter.misses_since_last() == {}
    proc.set(21, prog_fdinfo(1590, 0, 91))   # the storm: statistics off, misses still counted
    proc.set(22, prog_fdinfo(1591, 0, 2))
    softirq_key = recursion_miss_key("softirq", "tracepoint:irq:softirq_entry")
    assert counter.misses_since_last() == {DROPS_KEY: 91, softirq_key: 2}
    assert counter.misses_since_last() == {}, "only what is new"
    proc.set(21, prog_fdinfo(1702, 0, 4))    # reloaded: a new program, counting from zero
    assert counter.misses_since_last() == {DROPS_KEY: 4}


class RecordedLoader(MeteredLoader):
    """What the sampler needs of a MeteredLoader: the programs it loaded (nothing compiled)."""

    def __init__(self, loaded: list[tuple[str, object]]):
        self.loaded = loaded


class FullMapSource:
    """A source whose map overflowed: lost events of its own, beside the skipped runs."""

    name = "retransmits"

    def attach(self, loader) -> list[ProbeStatus]:
        return [ProbeStatus("retransmits", True, "tracepoint:tcp:tcp_retransmit_skb")]

    def collect(self, frame: SnapshotFrame) -> None:
        frame.lost["retransmits_by_netns"] += 1

    def detach(self) -> None:
        pass


def storm_capture(tmp_path: Path) -> Capture:
    """Three intervals through the sampler: quiet, a storm (91 skipped runs), quiet."""
    proc = RecordedProc(tmp_path / "proc")
    sampler = Sampler(PodDirectory([]), [FullMapSource()], proc=proc.root)
    statuses = sampler.attach(RecordedLoader(loaded_programs()))
    capture = Capture(KERNEL, statuses)
    for misses in (0, 91, 91):
        proc.set(21, prog_fdinfo(1590, 1000, misses))
        proc.set(22, prog_fdinfo(1591, 1000, 0))
        capture.add(sampler.sample())
    return capture


def test_the_sampler_folds_misses_into_lost_events(tmp_path):
    capture = storm_capture(tmp_path)
    assert [dict(s.lost) for s in capture.snapshots] == [
        {"retransmits_by_netns": 1}, {"retransmits_by_netns": 1, DROPS_KEY: 91}, {"retransmits_by_netns": 1}]
    assert capture.to_json()["lost_events"] == {"retransmits_by_netns": 3, DROPS_KEY: 91}


def test_every_view_shows_the_skipped_runs(tmp_path):
    capture = storm_capture(tmp_path)
    doc = capture.to_json()

    out = io.StringIO()
    print_report(doc, Console(file=out, width=200, color_system=None))
    report = out.getvalue()
    assert f"{DROPS_KEY} 91" in report and "skipped" in report

    families = read_prometheus(exposition_text(doc))
    assert sample_value(families, "netprof_lost_events_total", map=DROPS_KEY) == 91

    totals = ServedCapture()
    for snapshot in capture.snapshots:
        totals.add(snapshot, {})
    served = read_prometheus(exposition_text(totals.document()))
    assert sample_value(served, "netprof_lost_events_total", map=DROPS_KEY) == 91

    panel = io.StringIO()
    Console(file=panel, width=200, color_system=None).print(render_probes(doc))
    assert f"{DROPS_KEY} 91" in panel.getvalue()


def test_the_cost_meter_reuses_the_intervals_one_read_of_each_program(tmp_path, monkeypatch):
    # Each interval read every program's fdinfo twice (misses, then the cost meter): one
    # read now serves both, with the same counters.
    from profiler import cost

    proc = RecordedProc(tmp_path / "proc")
    sampler = Sampler(PodDirectory([]), [FullMapSource()], proc=proc.root)
    loaded = loaded_programs()
    sampler.attach(RecordedLoader(loaded))
    meter = cost.CostMeter(loaded, proc=proc.root)
    proc.set(21, prog_fdinfo(1590, 5000, 3))
    proc.set(22, prog_fdinfo(1591, 700, 0))
    reads = []
    real_read = cost.read_prog_stats
    monkeypatch.setattr(cost, "read_prog_stats", lambda fd, root: reads.append(fd) or real_read(fd, root))
    sampler.sample()
    reading = meter.read(sampler.program_stats)
    assert sorted(reads) == [21, 22]
    assert reading.programs == meter.read().programs  # what a read of its own gives
    assert reading.programs[("drops", "tracepoint:skb:kfree_skb")].run_count == 5000
