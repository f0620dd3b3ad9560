"""`netprof profile` as root with another user's cache in its environment (`sudo -E`), or a
read-only home (seen in a QEMU guest as exit 70): it captures, from a private shim it says
it built (issue 12, item 4)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("bpf_ready")

NOBODY = 65534


def _profile(env: dict[str, str]) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("NETPROF_CACHE_DIR", "XDG_CACHE_HOME")}
    return subprocess.run([sys.executable, "-m", "profiler.cli", "profile", "--duration", "1", "--json"],
                          capture_output=True, text=True, timeout=120, env={**clean, **env})


def test_another_users_home_is_not_compiled_from(tmp_path: Path):
    home = tmp_path / "alice"
    planted = home / ".cache/netprof/kernel-shim"
    planted.mkdir(parents=True)
    for path in (home, home / ".cache", home / ".cache/netprof", planted):
        os.chown(path, NOBODY, NOBODY)
    proc = _profile({"HOME": str(home)})
    assert proc.returncode == 0, proc.stderr
    said = [line for line in proc.stderr.splitlines() if "not using the kernel-shim cache" in line]
    assert len(said) == 1 and f"{home} is owned by uid {NOBODY}" in said[0], proc.stderr
    assert list(planted.iterdir()) == [], "nothing may be built in the other user's cache"


def test_a_read_only_home_falls_back_cleanly(tmp_path: Path):
    home = tmp_path / "ro-home"
    home.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k,mode=0755", "tmpfs", str(home)], check=True)
    try:
        proc = _profile({"HOME": str(home)})
    finally:
        subprocess.run(["umount", "-l", str(home)], check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Read-only file system" in proc.stderr and "internal error" not in proc.stderr
