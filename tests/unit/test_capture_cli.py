"""Every command that reads a capture file answers a bad one with one line and a non-zero
exit: `netprof export`, `netprof fix --from`, `netprof tui --replay`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
NETPROF = Path(sys.executable).parent / "netprof"
QUIET = ROOT / "tests" / "tui" / "fixtures" / "quiet.json"

COMMANDS = {
    "export": lambda path: ["export", str(path), "--format", "prometheus"],
    "fix": lambda path: ["fix", "--from", str(path), "--journal-dir", str(path.parent / "journal")],
    "tui": lambda path: ["tui", "--replay", str(path)],
}


def _mutated(mutate) -> str:
    doc = json.loads(QUIET.read_text())
    mutate(doc)
    return json.dumps(doc)


HOSTILE = {
    "pods-not-a-list": (_mutated(lambda d: d.__setitem__("pods", 5)), "$.pods"),
    "findings-a-string": (_mutated(lambda d: d.__setitem__("findings", "x")), "$.findings"),
    "nan-counter": (QUIET.read_text().replace('"duration_s": 2.8', '"duration_s": NaN', 1), "NaN"),
    "infinite-counter": (QUIET.read_text().replace('"duration_s": 2.8', '"duration_s": 1e999', 1), "too large"),
    "deep-nesting": ('{"schema": "netprof.profile/v1", "pods": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested deeper"),
    "pod-name-a-number": (_mutated(lambda d: d["pods"][0].__setitem__("pod", 7)), "$.pods[0].pod"),
    "napi-without-polls": (_mutated(lambda d: d["cpus"][0]["napi"][0].pop("polls")), "$.cpus[0].napi[0]"),
    "not-json": ("{\"schema\": ", "is not JSON"),
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("case", HOSTILE)
def test_a_bad_capture_is_one_line_and_exit_1(tmp_path, command, case):
    text, expected = HOSTILE[case]
    assert '"duration_s": 2.8' in QUIET.read_text()  # the replacements above found their target
    path = tmp_path / "cap.json"
    path.write_text(text)
    result = subprocess.run([str(NETPROF), *COMMANDS[command](path)], capture_output=True, text=True,
                            timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert result.stderr.startswith("netprof: ") and result.stderr.count("\n") == 1, result.stderr
    assert expected in result.stderr and "internal error" not in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("command", COMMANDS)
def test_a_capture_over_the_size_limit_is_refused_before_reading(tmp_path, command):
    path = tmp_path / "cap.json"
    path.write_text(QUIET.read_text() + " " * (2 << 20))
    result = subprocess.run([str(NETPROF), *COMMANDS[command](path), "--max-capture-mb", "1"], capture_output=True,
                            text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "is larger than 1 MiB (2 MiB)" in result.stderr
    allowed = subprocess.run([str(NETPROF), *COMMANDS[command](path), "--max-capture-mb", "3"], capture_output=True,
                             text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert "larger than" not in allowed.stderr


def test_a_good_capture_still_exports(tmp_path):
    result = subprocess.run([str(NETPROF), "export", str(QUIET), "--format", "histograms-csv"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("histogram,unit,pod,netns,cpu,vector,")
