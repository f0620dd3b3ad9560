"""No capture is lost to an output error (issue 12, item 5): bad --output paths and a closed
stdout are refused before the capture; what fails only at the end (a full disk, /dev/full,
a reader that went away) saves the capture to a private fallback file and says where."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from profiler import capture_output, cli
from profiler import profile as profile_module

CAPTURE = Path(__file__).parents[1] / "tui/fixtures/busy.json"


class _FakeCapture:
    interrupted = False

    def to_json(self) -> dict:
        return json.loads(CAPTURE.read_text())


@pytest.fixture
def captures(monkeypatch) -> list[object]:
    """run_profile replaced by a recorded call: what is tested here is what happens to the
    capture, not the probes (tests/integration/test_profile_output.py runs the real one)."""
    calls: list[object] = []

    def fake_run_profile(options, *args, **kwargs):
        calls.append(options)
        return _FakeCapture()

    monkeypatch.setattr(profile_module, "run_profile", fake_run_profile)
    return calls


@pytest.fixture
def fallback(tmp_path, monkeypatch) -> Path:
    directory = tmp_path / "fallback"
    monkeypatch.setattr(capture_output, "FALLBACK_DIRS", (directory,), raising=False)
    return directory


@pytest.fixture
def tiny_tmpfs(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        target = tmp_path / name
        target.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)], check=True)
        mounted.append(target)
        return target

    yield mount
    for target in mounted:
        subprocess.run(["umount", "-l", str(target)], check=False)


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("netprof: ")]
    assert len(lines) == 1, err
    assert "internal error" not in err and "Traceback" not in err
    return lines[0]


def _refused_before_capture(out: Path, captures, capsys) -> str:
    code = cli.main(["profile", "--duration", "1", "--output", str(out)])
    assert code == 1
    assert captures == [], "the capture ran although its output could not be written"
    return _one_line_error(capsys)


def test_an_existing_file_as_output_is_refused_before_the_capture(tmp_path, captures, capsys):
    target = tmp_path / "capture.json"
    target.write_text("keep me\n")
    line = _refused_before_capture(target, captures, capsys)
    assert "exists and is not a directory" in line
    assert target.read_text() == "keep me\n"


def test_a_proc_path_is_refused_before_the_capture(captures, capsys):
    line = _refused_before_capture(Path("/proc/netprof-out"), captures, capsys)
    assert "cannot write into /proc" in line


def test_an_over_long_name_is_refused_before_the_capture(tmp_path, captures, capsys):
    line = _refused_before_capture(tmp_path / ("a" * 300), captures, capsys)
    assert "longer than this file system's 255 bytes" in line


def test_a_read_only_folder_is_refused_before_the_capture(tiny_tmpfs, captures, capsys):
    read_only = tiny_tmpfs("ro", "ro,size=64k")
    line = _refused_before_capture(read_only / "out", captures, capsys)
    assert "Read-only file system" in line and "nothing was captured" in line
    assert not (read_only / "out").exists()


def test_a_folder_without_write_permission_is_refused_before_the_capture(tmp_path):
    """As another user (root bypasses permissions): the check runs before netprof asks for root."""
    if os.geteuid() != 0:
        pytest.skip("switching to another uid needs root")
    private = tmp_path / "root-only"
    private.mkdir(mode=0o700)
    proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable,
                           "-m", "profiler.cli", "profile", "--duration", "1", "--output", str(private / "out")],
                          capture_output=True, text=True, timeout=60, cwd=Path(__file__).parents[2])
    assert proc.returncode == 1
    # pytest's own folders are 0700 too, so the folder named may be an ancestor of `private`.
    assert proc.stderr.startswith(f"netprof: --output {private / 'out'}: cannot write into /tmp/")
    assert proc.stderr.endswith(": Permission denied; nothing was captured\n") and proc.stderr.count("\n") == 1


def test_a_closed_stdout_is_refused_before_the_capture(monkeypatch, captures, capsys):
    monkeypatch.setattr(sys, "stdout", None)  # what Python sets when fd 1 is closed at start
    assert cli.main(["profile", "--duration", "1", "--json"]) == 1
    assert captures == []
    assert "stdout is closed" in _one_line_error(capsys)


def test_a_disk_that_fills_during_the_capture_keeps_the_capture(tiny_tmpfs, fallback, monkeypatch, capsys):
    out = tiny_tmpfs("small", "size=64k") / "out"

    def run_profile_while_the_disk_fills(options, *args, **kwargs):
        fd = os.open(out.parent / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while os.write(fd, b"x" * 4096):
                pass
        except OSError:  # ENOSPC: the disk is full now
            pass
        finally:
            os.close(fd)
        return _FakeCapture()

    monkeypatch.setattr(profile_module, "run_profile", run_profile_while_the_disk_fills)
    assert cli.main(["profile", "--duration", "1", "--output", str(out)]) == 1
    line = _one_line_error(capsys)
    assert "No space left on device" in line
    saved = Path(line.split("the capture is saved in ")[1].split(" ")[0])
    assert saved.parent == fallback
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text()) == _FakeCapture().to_json()


_DRIVER = """
import json, sys
from pathlib import Path
from profiler import capture_output, cli, profile

class Capture:
    interrupted = False
    def to_json(self):
        return json.loads(Path(sys.argv[1]).read_text())

profile.run_profile = lambda options, *a, **k: Capture()
capture_output.FALLBACK_DIRS = (Path(sys.argv[2]),)
sys.exit(cli.main(sys.argv[3:]))
"""


def _run_driver(fallback: Path, args: list[str], stdout) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", _DRIVER, str(CAPTURE), str(fallback), "profile", "-d", "1", *args],
                          stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=60)


def _assert_saved_once(proc: subprocess.CompletedProcess, fallback: Path, reason: str) -> None:
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("netprof: "), proc.stderr
    assert reason in proc.stderr
    saved = Path(proc.stderr.split("the capture is saved in ")[1].split(" ")[0])
    assert saved.parent == fallback
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert json.loads(saved.read_text()) == json.loads(CAPTURE.read_text())


@pytest.mark.parametrize("as_json", [True, False], ids=["json", "report"])
def test_stdout_on_a_full_disk_keeps_the_capture(tmp_path, as_json):
    with open("/dev/full", "w") as full:
        proc = _run_driver(tmp_path / "fallback", ["--json"] if as_json else [], full)
    _assert_saved_once(proc, tmp_path / "fallback", "cannot write to stdout: No space left on device")


def test_stdout_whose_reader_went_away_keeps_the_capture(tmp_path):
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = _run_driver(tmp_path / "fallback", ["--json"], write_end)
    finally:
        os.close(write_end)
    _assert_saved_once(proc, tmp_path / "fallback", "cannot write to stdout: Broken pipe")


def test_output_checks_leave_nothing_behind(tmp_path):
    missing = tmp_path / "a/b/c"
    capture_output.check_output_dir(missing)
    assert not (tmp_path / "a").exists()
    existing = tmp_path / "d"
    existing.mkdir()
    capture_output.check_output_dir(existing)
    assert list(existing.iterdir()) == []
