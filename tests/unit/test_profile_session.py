"""One attach for several captures (`fix --apply --verify`): each capture holds its own window
only, and netprof's programs are compiled and attached once."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from profiler import profile as profile_module
from profiler.errors import NetprofError
from profiler.live import LiveSession
from profiler.probes.base import ProbeStatus
from profiler.snapshot import PodInterval, Snapshot


class CountingSampler:
    """Stands in for the kernel side: every sample() is one interval in which the pod
    retransmitted `next_retransmits` times."""

    def __init__(self):
        self.next_retransmits = 0
        self.clock = 100.0

    def sample(self, final: bool = False) -> Snapshot:
        started, self.clock = self.clock, self.clock + 1.0
        return Snapshot(started, self.clock, (PodInterval("pod-a", 21, self.next_retransmits, self.next_retransmits),))

    def set_detail(self, on: bool) -> list[str]:
        return []

    def detach(self) -> None:
        pass


def retransmits_of(session: LiveSession) -> int:
    return sum(pod["retransmits"] for pod in session.capture(with_node=False).to_json()["pods"])


def test_a_restarted_window_holds_only_what_came_after(tmp_path: Path):
    session = LiveSession(root=tmp_path, measure_cost=False)
    sampler = session._sampler = CountingSampler()
    sampler.next_retransmits = 5
    session.sample()
    session.sample()
    assert retransmits_of(session) == 10
    # Between the windows (a fix being applied) the pod retransmits 7 times; the restart reads
    # them, so they belong to neither window.
    sampler.next_retransmits = 7
    before = session.started_at
    session.restart_window()
    assert retransmits_of(session) == 0
    assert session.started_at >= before
    sampler.next_retransmits = 2
    session.sample()
    assert retransmits_of(session) == 2


class FakeLiveSession:
    """What ProfileSession asks of a LiveSession, counted."""
    instances: list["FakeLiveSession"] = []

    def __init__(self, **kwargs):
        self.starts = self.restarts = self.samples = self.stops = 0
        self.statuses = [ProbeStatus("tcp_retransmits", True, "tracepoint:tcp:tcp_retransmit_skb")]
        self.loader = type("Loader", (), {"mode": "btf"})()
        FakeLiveSession.instances.append(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stops += 1

    def start(self, log):
        self.starts += 1

    def restart_window(self):
        self.restarts += 1

    def sample(self, final=False):
        self.samples += 1

    def capture(self, with_node=True):
        return SimpleNamespace(interrupted=None)


@pytest.fixture
def fake_sessions(monkeypatch) -> list[FakeLiveSession]:
    FakeLiveSession.instances = []
    monkeypatch.setattr(profile_module, "LiveSession", FakeLiveSession)
    return FakeLiveSession.instances


def test_captures_in_one_session_attach_once_and_each_opens_its_own_window(fake_sessions):
    logged: list[str] = []
    with profile_module.ProfileSession(log=logged.append) as run:
        run.capture(0.01, 0.01)
        run.capture(0.01, 0.01)
        run.capture(0.01, 0.01)
        (session,) = fake_sessions
        assert (session.starts, session.restarts, session.stops) == (1, 2, 0)
    assert session.stops == 1, "detached when the session ends"
    assert sum("capturing for 0.01s" in line for line in logged) == 3


def test_a_window_after_an_explicit_attach_starts_at_the_capture_not_at_the_attach(fake_sessions):
    # Attach first (the slow compile), start the workload, then capture: what the programs
    # counted in between is no window's.
    with profile_module.ProfileSession(log=lambda msg: None) as run:
        run.start()
        (session,) = fake_sessions
        assert session.restarts == 0
        run.capture(0.01, 0.01)
        assert (session.starts, session.restarts) == (1, 1)


def test_a_session_that_captures_nothing_never_attaches(fake_sessions):
    with profile_module.ProfileSession():
        pass
    assert fake_sessions == []


def test_an_interrupt_before_a_window_opens_says_nothing_was_captured(fake_sessions):
    def interrupted():
        raise KeyboardInterrupt

    with profile_module.ProfileSession(log=lambda msg: None) as run:
        with pytest.raises(NetprofError, match="nothing was captured"):
            run.capture(0.01, 0.01, on_attached=interrupted)
    assert fake_sessions[0].stops == 1


def test_a_capture_reuses_a_young_node_context_for_the_same_pods(monkeypatch):
    # The dashboard analyses every second; IRQ affinities, irqbalance and every pod's
    # sysctls were read again each time.
    from pathlib import Path

    from profiler import live

    reads = []
    monkeypatch.setattr(live, "collect_node_context", lambda paths, root: reads.append(dict(paths)) or object())
    session = live.LiveSession()  # nothing attached: only the node context is asked for
    clock = [100.0]
    monkeypatch.setattr(live.time, "monotonic", lambda: clock[0])
    pods = {11: Path("/run/netns/a")}
    first = session._node_context(pods, 10.0)
    clock[0] += 5
    assert session._node_context(pods, 10.0) is first and len(reads) == 1
    assert session._node_context(pods, 0.0) is not first                 # the default: always afresh
    clock[0] += 1
    assert session._node_context({**pods, 12: Path("/run/netns/b")}, 10.0) and len(reads) == 3  # a new pod
    clock[0] += 11
    session._node_context({**pods, 12: Path("/run/netns/b")}, 10.0)
    assert len(reads) == 4                                                 # too old
    session.forget_node_context()
    session._node_context({**pods, 12: Path("/run/netns/b")}, 10.0)
    assert len(reads) == 5                                                 # a fix: read again
