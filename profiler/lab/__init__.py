"""The fake-pod lab: network namespaces wired like a CNI would, plus faults and workloads.

Kept tiny on purpose: `python -m profiler.lab.traffic` imports this package once per pod
process, so nothing heavy may be imported here.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence

from profiler.errors import NetprofError

# Every lab object's name starts with this, followed by a per-run suffix (6 hex digits when
# generated), so `down_all()` can find the leftovers of crashed runs by name alone.
LAB_NAME_MARK = "nplab"


class LabError(NetprofError):
    """A lab operation failed; the message is one line and names the failing command."""


def _one_line(text: str) -> str:
    return " | ".join(line.strip() for line in text.strip().splitlines() if line.strip())


def run_checked(
    argv: Sequence[str], *, input_text: str | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """Run a command (argument list, never a shell); raise LabError with its stderr on failure."""
    try:
        proc = subprocess.run(
            list(argv), input=input_text, capture_output=True, text=True, timeout=timeout
        )
    except FileNotFoundError as exc:
        raise LabError(f"{argv[0]}: command not found (install iproute2/nftables/procps)") from exc
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"`{' '.join(argv)}` timed out after {timeout:g}s") from exc
    if proc.returncode != 0:
        detail = _one_line(proc.stderr) or _one_line(proc.stdout) or "no output"
        raise LabError(f"`{' '.join(argv)}` failed (exit {proc.returncode}): {detail}")
    return proc
