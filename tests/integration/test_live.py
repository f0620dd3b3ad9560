"""LiveSession: the rolling window the TUI and `netprof serve` read."""
from __future__ import annotations

import types

import pytest

from profiler.live import LiveSession
from profiler.probes.base import ProbeStatus

pytestmark = pytest.mark.usefixtures("bpf_ready")


class CountingSource:
    """Reports one retransmit per interval for a made-up netns, so totals are predictable."""

    name = "counting"

    def attach(self, loader):
        return [ProbeStatus("counting", True, "test")]

    def collect(self, frame):
        frame.pod(4242, retransmits=1, retransmitted_segments=1)

    def detach(self):
        pass


def test_window_keeps_only_recent_intervals(monkeypatch):
    clock = iter(float(t) for t in range(1000))
    # Only the sampler's clock: one tick per interval, whatever else reads the time.
    monkeypatch.setattr("profiler.sampler.time", types.SimpleNamespace(monotonic=lambda: next(clock)))
    with LiveSession(sources=[CountingSource()], window_s=5) as session:
        session.start()
        for _ in range(20):
            session.sample()
        capture = session.capture(with_node=False)
        totals = {p.netns: p.retransmits for p in capture.pod_totals()}
        assert totals[4242] == 5 and capture.duration_s == 5
        recent = session.capture(last_s=2, with_node=False)
        assert {p.netns: p.retransmits for p in recent.pod_totals()}[4242] == 2


def test_capture_with_node_context_and_findings():
    with LiveSession(sources=[CountingSource()]) as session:
        session.start()
        session.sample()
        capture = session.capture()
        assert capture.node is not None and capture.node.boot_id
        assert capture.to_json()["pods"][0]["pod"] == "netns:4242"


class RefusedSource(CountingSource):
    """A probe the kernel refused, with an error that quotes something hostile."""

    name = "refused"

    def attach(self, loader):
        return [ProbeStatus("refused", False, "tracepoint:x:y", "cannot attach: \x1b]0;pwned\x07\x1b[2J")]

    def collect(self, frame):
        pass    # as every source after a failed attach: nothing to read


def test_probe_errors_reach_the_log_inert():
    lines: list[str] = []
    with LiveSession(sources=[CountingSource(), RefusedSource()], measure_cost=False) as session:
        session.start(lines.append)
    assert lines == ["probe refused not attached: cannot attach: \\x1b]0;pwned\\x07\\x1b[2J"]
