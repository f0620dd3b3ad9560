"""The softnet source over a fixture /proc tree: deltas per CPU, quiet CPUs left out."""
from __future__ import annotations

from pathlib import Path

from profiler.snapshot import SnapshotFrame
from profiler.sources.softnet import VIA, SoftnetSource


def softnet_line(cpu: int, processed: int, dropped: int = 0, squeeze: int = 0, rps: int = 0) -> str:
    columns = [processed, dropped, squeeze, 0, 0, 0, 0, 0, 0, rps, 0, 0, cpu]
    return " ".join(f"{value:08x}" for value in columns)


def write_tree(root: Path, lines: list[str]) -> None:
    (root / "proc/net").mkdir(parents=True, exist_ok=True)
    (root / "proc/net/softnet_stat").write_text("\n".join(lines) + "\n")
    (root / "sys/devices/system/cpu").mkdir(parents=True, exist_ok=True)
    (root / "sys/devices/system/cpu/online").write_text("0-1\n")


def collect(source: SoftnetSource):
    frame = SnapshotFrame(0.0, label=str)
    source.collect(frame)
    return frame.freeze(1.0)


def test_deltas_per_cpu_and_quiet_cpus_left_out(tmp_path):
    write_tree(tmp_path, [softnet_line(0, 100), softnet_line(1, 5000, rps=7)])
    source = SoftnetSource(root=tmp_path)
    [status] = source.attach()
    assert status.attached and status.via == VIA
    write_tree(tmp_path, [softnet_line(0, 100), softnet_line(1, 9000, dropped=3, squeeze=2, rps=10)])
    snapshot = collect(source)
    assert [c.cpu for c in snapshot.cpus] == [1]
    assert dict(snapshot.cpus[0].softnet) == {"processed": 4000, "dropped": 3, "time_squeeze": 2, "received_rps": 3}


def test_32_bit_counters_wrap(tmp_path):
    write_tree(tmp_path, [softnet_line(0, 0xFFFFFFF0), softnet_line(1, 0)])
    source = SoftnetSource(root=tmp_path)
    source.attach()
    write_tree(tmp_path, [softnet_line(0, 0x10), softnet_line(1, 0)])
    assert dict(collect(source).cpus[0].softnet) == {"processed": 0x20}


def test_missing_file_is_reported_not_raised(tmp_path):
    source = SoftnetSource(root=tmp_path)
    [status] = source.attach()
    assert not status.attached and "softnet_stat" in status.error
    assert collect(source).cpus == ()
