"""Files that name pods and flows are private (0600) whatever the umask; only the
textfile node_exporter reads is group-readable (0640, profiler/serve.py)."""
from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from profiler.analysis.findings import Finding, Fix
from profiler.cli import main
from profiler.exports import atomic_write_text, write_all
from profiler.fix.command import write_snippets
from tests.unit.test_export_formats import sample_capture


@contextmanager
def umask(mask: int) -> Iterator[None]:
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o000, 0o022, 0o077])
def test_every_export_is_private_whatever_the_umask(tmp_path, mask):
    out = tmp_path / "out"
    with umask(mask):
        written = write_all(sample_capture().to_json(), out)
    assert len(written) == 7
    assert {path.name: mode(path) for path in written} == {path.name: 0o600 for path in written}


def test_replacing_a_world_readable_file_makes_it_private(tmp_path):
    target = tmp_path / "capture.json"
    target.write_text("{}")
    target.chmod(0o644)
    with umask(0):
        atomic_write_text(target, "new\n")
    assert target.read_text() == "new\n" and mode(target) == 0o600


def test_a_shared_mode_is_kept_exactly(tmp_path):
    # What serve's textfile asks for: group read, and the umask cannot add "other".
    target = tmp_path / "netprof.prom"
    with umask(0):
        atomic_write_text(target, "x 1\n", mode=0o640)
    assert mode(target) == 0o640


def test_export_command_output_is_private(tmp_path, capsys):
    capture = tmp_path / "cap.json"
    capture.write_text(json.dumps(sample_capture().to_json()))
    target = tmp_path / "metrics.prom"
    with umask(0):
        assert main(["export", str(capture), "--format", "prometheus", "-o", str(target)]) == 0
    assert mode(target) == 0o600


def test_fix_snippets_are_private(tmp_path):
    fix = Fix("pod", "raise somaxconn in the pod spec", "why", snippet="spec:\n  securityContext: {}\n")
    finding = Finding("listen-overflow", "critical", "overflows", {}, (fix,), pod="shop/web-0")
    with umask(0):
        written = write_snippets([finding], tmp_path / "snippets")
    assert len(written) == 1 and mode(written[0]) == 0o600
