"""`netprof profile` as a user runs it, when its output cannot be written (issue 12, item 5)."""
from __future__ import annotations

import json
import stat
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("bpf_ready")


def _profile(*args: str, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "profiler.cli", "profile", *args],
                          stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=90)


def test_a_bad_output_folder_costs_no_capture():
    proc = _profile("--duration", "30", "--output", "/proc/netprof-out")
    assert proc.returncode == 1
    assert "capturing" not in proc.stderr  # refused before any probe attached
    assert proc.stderr.startswith("netprof: --output /proc/netprof-out: cannot write into /proc")
    assert proc.stderr.count("\n") == 1


def test_json_on_a_full_disk_is_saved_to_a_private_file():
    with open("/dev/full", "w") as full:
        proc = _profile("--duration", "1", "--json", stdout=full)
    assert proc.returncode == 1, proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("netprof: cannot write to stdout: No space left on device; the capture is saved in ")
    saved = Path(last.split("the capture is saved in ")[1].split(" ")[0])
    try:
        assert stat.S_IMODE(saved.stat().st_mode) == 0o600 and saved.stat().st_uid == 0
        document = json.loads(saved.read_text())
        assert document["schema"] == "netprof.profile/v1" and document["intervals"] >= 1
    finally:
        saved.unlink(missing_ok=True)
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr
