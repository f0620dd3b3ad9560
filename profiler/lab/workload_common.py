"""What every lab workload (`profiler.lab.traffic`, `profiler.lab.workload_*`) shares: the
stop flag SIGTERM/SIGINT set, JSON lines on stdout, and the --duration argument type.

Standard library only and nothing imported at module level beyond it: the workloads start
once per pod, often several at the same instant.
"""
from __future__ import annotations

import argparse
import json
import signal
from collections.abc import Callable
from types import FrameType
from typing import Any

# How long a scenario may run (`netprof lab run --duration`): the lab is for minutes of
# trouble, and a forgotten blast must stop by itself.
MAX_RUN_S = 600.0
# Servers and sinks outlive their clients by this much, so the last client packets land.
GRACE_S = 30.0
# What every workload accepts: a run plus the grace its servers get. One number for all, so
# a duration the CLI accepts is one every workload of every scenario can run.
MAX_WORKLOAD_S = MAX_RUN_S + GRACE_S


class StopFlag:
    """Whether SIGTERM or SIGINT arrived; the workloads' loops poll `requested` and end."""

    def __init__(self) -> None:
        self.requested = False

    def request(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True

    def install_handlers(self) -> None:
        """Make SIGTERM and SIGINT set this flag instead of killing the process."""
        signal.signal(signal.SIGTERM, self.request)
        signal.signal(signal.SIGINT, self.request)


def emit(record: dict[str, Any]) -> None:
    """One JSON line on stdout, flushed at once: scenarios wait on these lines."""
    print(json.dumps(record, sort_keys=True), flush=True)


def duration_type(max_s: float) -> Callable[[str], float]:
    """An argparse `type` for --duration: seconds within (0, max_s], so a forgotten process
    cannot run for ever."""

    # Named for argparse, which says "invalid duration value: 'x'" when float() refuses x.
    def duration(value: str) -> float:
        seconds = float(value)
        if not 0 < seconds <= max_s:
            raise argparse.ArgumentTypeError(f"duration must be within (0, {max_s:g}] seconds")
        return seconds

    return duration
