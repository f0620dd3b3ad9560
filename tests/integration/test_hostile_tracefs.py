"""`netprof profile` on a node whose tracefs has FIFOs for `format` and `id` files (issue 12,
item 7): it used to block 40 s and more; now each probe whose tracepoint files are not
regular is refused with one line and the capture runs with the rest."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("bpf_ready")

EVENTS = ("skb/kfree_skb", "irq/softirq_entry", "irq/softirq_exit", "irq/softirq_raise",
          "tcp/tcp_retransmit_skb", "napi/napi_poll", "syscalls/sys_enter_listen")


def test_profile_on_a_fifo_tracefs_returns_promptly_naming_the_fifo(tmp_path: Path):
    tracefs = tmp_path / "tracing"
    for event in EVENTS:
        (tracefs / "events" / event).mkdir(parents=True)
        os.mkfifo(tracefs / "events" / event / "format")
        os.mkfifo(tracefs / "events" / event / "id")
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "profiler.cli", "profile", "--duration", "1", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "NETPROF_TRACEFS": str(tracefs)})
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail("netprof profile blocked for 60 s on a tracefs of FIFOs")
    elapsed = time.monotonic() - started
    assert elapsed < 30, f"took {elapsed:.1f}s"
    assert "Traceback" not in err and "internal error" not in err
    assert proc.returncode in (0, 1), err
    refused = [line for line in err.splitlines() if "is a FIFO, not a regular file" in line]
    assert any("tracepoint tcp:tcp_retransmit_skb:" in line for line in refused), err
    assert any("tracepoint skb:kfree_skb:" in line for line in refused), err
