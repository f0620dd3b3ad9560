"""The live feed's threading contract, with a stand-in session (no kernel): the sampler never
waits for the UI, the UI never waits for the sampler, stale models are dropped, failures show."""
from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from profiler.capture import Capture
from profiler.errors import NetprofError
from profiler.kernel.features import KernelInfo
from profiler.probes.base import ProbeStatus
from profiler.snapshot import PodInterval, Snapshot
from tui.feed import LiveFeed, Mailbox
from tui.model import build_model

INTERVAL_S = 0.02


class FakePods:
    def __init__(self) -> None:
        self.live = {11: "web", 12: "db"}

    def netns_paths(self) -> dict[int, Path]:
        return {inode: Path(f"/run/netns/{name}") for inode, name in self.live.items()}

    def known(self) -> dict[int, str]:
        return dict(self.live)


class FakeSession:
    """LiveSession's surface: every sample, `web` retransmits once more than the last time."""

    info = KernelInfo("6.18-test", True, False, None, None)
    statuses = [ProbeStatus("tcp_retransmits", True, "tracepoint:tcp:tcp_retransmit_skb")]
    started_at = 0.0

    def __init__(self, capture_cost_s: float = 0.0):
        self.pods = FakePods()
        self.snapshots: list[Snapshot] = []
        self.samples = 0
        self.captures = 0
        self.capture_cost_s = capture_cost_s
        self.gate = threading.Event()
        self.gate.set()
        self.fail_next: str | None = None
        self.stopped = False
        self.node_max_ages: list[float] = []
        self.node_forgotten = 0

    def sample(self) -> Snapshot:
        self.gate.wait()
        if self.fail_next:
            message, self.fail_next = self.fail_next, None
            raise NetprofError(message)
        self.samples += 1
        snapshot = Snapshot(started_s=float(self.samples - 1), ended_s=float(self.samples),
                            pods=(PodInterval("web", 11, retransmits=self.samples),))
        self.snapshots.append(snapshot)
        return snapshot

    def capture(self, last_s=None, with_node=True, with_findings=True, node_max_age_s=0.0) -> Capture:
        self.captures += 1
        self.node_max_ages.append(node_max_age_s)
        time.sleep(self.capture_cost_s)
        capture = Capture(kernel=self.info, probes=list(self.statuses), known_pods=self.pods.known())
        for snapshot in list(self.snapshots):
            capture.add(snapshot)
        return capture

    def stop(self) -> None:
        self.stopped = True

    def forget_node_context(self) -> None:
        self.node_forgotten += 1


def wait_for(predicate, timeout_s: float = 5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.005)
    raise AssertionError("timed out")


@pytest.fixture
def session():
    return FakeSession()


@pytest.fixture
def feed(session):
    feed = LiveFeed(session, INTERVAL_S)
    yield feed
    session.gate.set()
    feed.stop()


def test_models_carry_the_latest_interval_and_the_history(feed, session):
    feed.start(lambda: None)
    model = wait_for(lambda: (m := feed.take()) is not None and m.sequence >= 4 and m)
    web = next(p for p in model.pods if p.name == "web")
    # Each interval lasts 1 s on the stand-in's clock and web retransmits `sequence` times.
    assert web.rates.retransmits_per_s == model.sequence
    assert web.trend[-3:] == (model.sequence - 2, model.sequence - 1, model.sequence)
    assert {p.name for p in model.pods} == {"web", "db"}  # the quiet pod is listed too
    assert model.header.mode == "live" and model.header.interval_s == INTERVAL_S
    # The window's document has every interval kept so far.
    assert model.document["pods"][0]["retransmits"] >= sum(range(1, model.sequence))


def test_a_ui_that_does_not_take_never_stalls_sampling(feed, session):
    told = []
    feed.start(lambda: told.append(time.monotonic()))
    # The first model fills the empty slot and notifies; each later one overwrites the model
    # the UI never took. Waiting on the mailbox (not on the session's sample count, which runs
    # ahead of the model being built) means model 15 has really been put.
    wait_for(lambda: feed.dropped_models >= 14)
    # Told once; nothing queued behind it; older models were overwritten, not kept.
    assert len(told) == 1
    assert session.samples >= 15
    newest = feed.take()
    assert newest.sequence >= 15
    assert feed.take() is None
    wait_for(lambda: len(told) == 2)  # taking re-arms the notification


def test_a_stuck_sampler_never_blocks_the_ui(feed, session):
    session.gate.clear()
    feed.start(lambda: None)
    started = time.monotonic()
    for _ in range(20):
        assert feed.take() is None
    assert time.monotonic() - started < 1.0  # a blocking take would hang here for good
    session.gate.set()
    assert wait_for(lambda: feed.take()) is not None


def test_a_failed_sample_is_reported_and_recovers(feed, session):
    feed.start(lambda: None)
    wait_for(lambda: feed.take())
    session.fail_next = "cannot read map: boom"
    failed = wait_for(lambda: (m := feed.take()) is not None and m.header.error and m)
    assert failed.header.error == "sampling failed: cannot read map: boom"
    assert wait_for(lambda: (m := feed.take()) is not None and m.header.error is None)


def test_analysis_is_rate_limited_by_its_cost():
    session = FakeSession(capture_cost_s=0.05)
    feed = LiveFeed(session, INTERVAL_S)
    try:
        feed.start(lambda: None)
        wait_for(lambda: session.samples >= 30)
    finally:
        feed.stop()
    # 0.05 s of analysis every max(interval, 5 × 0.05 s): far fewer analyses than samples.
    assert session.captures <= session.samples / 3
    assert session.stopped


def test_pods_leave_when_their_netns_goes(feed, session):
    feed.start(lambda: None)
    wait_for(lambda: (m := feed.take()) is not None and any(p.name == "db" for p in m.pods))
    del session.pods.live[12]
    assert wait_for(lambda: (m := feed.take()) is not None and all(p.name != "db" for p in m.pods))


def test_mailbox_keeps_only_the_newest():
    mailbox = Mailbox()
    models = [build_model({}, sequence=n) for n in range(3)]
    assert mailbox.put(models[0]) is True
    assert mailbox.put(models[1]) is False and mailbox.put(models[2]) is False
    assert mailbox.take() is models[2] and mailbox.dropped == 2
    assert mailbox.take() is None
    assert mailbox.put(models[0]) is True


def test_the_dashboards_analysis_reuses_a_recent_node_context(feed, session):
    from tui.feed import NODE_CONTEXT_MAX_AGE_S

    feed.start(lambda: None)
    wait_for(lambda: session.captures >= 2)
    assert set(session.node_max_ages) == {NODE_CONTEXT_MAX_AGE_S}
    feed.forget_node_context()  # a fix applied elsewhere: the node is read afresh
    assert session.node_forgotten == 1

