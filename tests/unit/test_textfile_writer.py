"""A --textfile that cannot be written is counted and logged, never fatal, and the last good
file stays (issue 12, item 6). Real failures: a full tmpfs, a folder replaced by a file, a
read-only mount."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from profiler.exports import atomic_write_text
from profiler.textfile import TextfileWriter


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    target = tmp_path / "textfile-dir"
    target.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(target)], check=True)
    yield target
    subprocess.run(["umount", "-l", str(target)], check=False)


def _writer(path: Path, lines: list[str], clock: _Clock, content: list[str]) -> TextfileWriter:
    return TextfileWriter(path, lambda: atomic_write_text(path, content[0]), lines.append, clock=clock,
                          wall_clock=lambda: 1.7e9, log_every_s=60)


def _counter(writer: TextfileWriter) -> float:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(writer)
    for line in generate_latest(registry).decode().splitlines():
        if line.startswith("netprof_textfile_write_errors_total "):
            return float(line.split()[1])
    raise AssertionError("no netprof_textfile_write_errors_total")


def _fill(directory: Path) -> None:
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:  # ENOSPC
        pass
    finally:
        os.close(fd)


def test_a_full_disk_keeps_the_last_good_file_and_counts(tmpfs):
    path, lines, clock, content = tmpfs / "netprof.prom", [], _Clock(), ["netprof_up 1\n"]
    writer = _writer(path, lines, clock, content)
    assert writer.write() and _counter(writer) == 0
    _fill(tmpfs)
    content[0] = "netprof_up 2\n" + "# padding\n" * 2000  # bigger than what is left
    for step in range(5):
        clock.now += 10
        assert writer.write() is False
    assert path.read_text() == "netprof_up 1\n", "the last good file must stay"
    assert _counter(writer) == 5
    assert sorted(p.name for p in tmpfs.iterdir()) == ["filler", "netprof.prom"], "no temp files left"
    # Rate-limited: one line for five failures within a minute, then one with the count.
    assert len(lines) == 1 and "No space left on device" in lines[0] and "still serving" in lines[0]
    clock.now += 61
    writer.write()
    assert len(lines) == 2 and "(4 more failure(s) not logged)" in lines[1]
    (tmpfs / "filler").unlink()
    assert writer.write() and path.read_text() == content[0]
    assert "written again after 6 failed write(s)" in lines[-1]
    assert _counter(writer) == 6


def test_a_folder_replaced_by_a_file_is_survived(tmp_path):
    folder = tmp_path / "textfiles"
    path, lines, clock, content = folder / "netprof.prom", [], _Clock(), ["netprof_up 1\n"]
    writer = _writer(path, lines, clock, content)
    assert writer.write()
    path.unlink()
    folder.rmdir()
    folder.write_text("not a folder\n")
    assert writer.write() is False and writer.write() is False
    assert _counter(writer) == 2 and len(lines) == 1
    assert folder.read_text() == "not a folder\n"


def test_a_read_only_folder_from_the_start_is_survived(tmpfs):
    path, lines, clock, content = tmpfs / "netprof.prom", [], _Clock(), ["netprof_up 1\n"]
    path.write_text("from before\n")
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    writer = _writer(path, lines, clock, content)
    assert writer.write() is False
    assert "Read-only file system" in lines[0]
    assert path.read_text() == "from before\n"
    assert _counter(writer) == 1
