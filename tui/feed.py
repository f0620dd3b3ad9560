"""Where the dashboard's models come from: a live session sampled on a worker thread, or a
saved capture.

Threads and who waits for whom:

- The sampling thread (`LiveFeed._run`) reads the kernel every interval (`session.sample()`),
  turns the interval into its profile JSON and the sparkline history, and every so often
  computes the window's capture with node context and findings (tens of ms: never on the UI
  thread). It builds a `DashboardModel` and drops it in a one-slot `Mailbox`, replacing any
  model the UI has not taken yet. It never waits for the UI.
- The UI thread is told "something new" with `App.post_message` (thread-safe and, unlike
  `call_from_thread`, it does not block until the UI has run: a slow terminal must not hold
  up the next map read) and takes the newest model from the mailbox. Stale models are simply
  overwritten, so a UI that falls behind skips frames instead of queueing them.
- A sampling thread that hangs (a stuck read) leaves the UI responsive: it keeps showing the
  last model and says how old it is.
"""
from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, Callable, Protocol

from profiler.capture import Capture
from profiler.errors import NetprofError
from profiler.kernel.features import KernelInfo
from profiler.pods import PodDirectory
from profiler.probes.base import ProbeStatus
from profiler.snapshot import Snapshot

from .model import DashboardModel, History, build_model

# Findings and node context are recomputed at most this often relative to their own cost, so
# analysis never takes more than a fifth of the sampling thread's time.
ANALYSIS_COST_FACTOR = 5.0
# The node context (IRQ affinities, irqbalance, node and pod sysctls) is read at most this
# often: once a second it cost more than the analysis it feeds. A fix applied from another
# terminal is in the fix journal, and the dashboard reads the node afresh when it sees one
# (NetprofApp.check_fix_journal).
NODE_CONTEXT_MAX_AGE_S = 10.0


class Mailbox:
    """One slot holding the newest model; `put` says whether the reader must be told."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._model: DashboardModel | None = None
        self._told = False
        self.dropped = 0  # models overwritten before the UI took them

    def put(self, model: DashboardModel) -> bool:
        with self._lock:
            if self._model is not None:
                self.dropped += 1
            self._model = model
            tell = not self._told
            self._told = True
            return tell

    def take(self) -> DashboardModel | None:
        with self._lock:
            model, self._model, self._told = self._model, None, False
            return model


class Feed(Protocol):
    mode: str
    interval_s: float | None

    def start(self, notify: Callable[[], None]) -> None: ...
    def take(self) -> DashboardModel | None: ...
    def stop(self) -> None: ...
    def forget_node_context(self) -> None: ...


class ReplayFeed:
    """A saved capture, shown as it is: one model, no threads."""

    mode = "replay"
    interval_s = None

    def __init__(self, document: dict[str, Any], source: Path | None = None):
        self.document = document
        self.source = source
        self._mailbox = Mailbox()

    def start(self, notify: Callable[[], None]) -> None:
        self._mailbox.put(build_model(self.document, mode="replay", sequence=1,
                                      updated_monotonic_s=time.monotonic()))
        notify()

    def take(self) -> DashboardModel | None:
        return self._mailbox.take()

    def forget_node_context(self) -> None:
        """A saved capture carries its node: nothing is read again."""

    def stop(self) -> None:
        pass


class Session(Protocol):
    """What LiveFeed needs of profiler.live.LiveSession (tests pass a stand-in)."""

    info: KernelInfo
    statuses: list[ProbeStatus]
    started_at: float
    pods: PodDirectory

    def sample(self) -> Snapshot: ...
    def capture(self, last_s: float | None = None, with_node: bool = True,
                with_findings: bool = True, node_max_age_s: float = 0.0) -> Capture: ...
    def stop(self) -> None: ...
    def forget_node_context(self) -> None: ...
    def forget_node_context(self) -> None: ...


def interval_capture(session: Session, snapshot: Snapshot) -> Capture:
    """One interval as a Capture: the pods whose netns exists now (quiet ones included, so they
    appear as soon as they exist and leave when their netns goes) plus any with activity."""
    live = set(session.pods.netns_paths())
    labels = session.pods.known()
    capture = Capture(kernel=session.info, probes=list(session.statuses), started_at=session.started_at,
                      known_pods={inode: label for inode, label in labels.items() if inode in live})
    capture.add(snapshot)
    return capture


class LiveFeed:
    mode = "live"

    def __init__(self, session: Session, interval_s: float, clock: Callable[[], float] = time.monotonic,
                 make_interval_capture: Callable[[Session, Snapshot], Capture] = interval_capture):
        self.session = session
        self.interval_s = interval_s
        self._clock = clock
        self._interval_capture = make_interval_capture
        self._mailbox = Mailbox()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._history = History()
        self._window_doc: dict[str, Any] | None = None
        self._analysed_at = float("-inf")
        self._analysis_cost_s = 0.0
        self.samples = 0          # intervals read so far
        self.analyses = 0         # window captures with findings computed so far
        self.worker_cpu_s = 0.0   # CPU time of the sampling thread (sampling, analysis, models)
        self.started_s: float | None = None

    @property
    def dropped_models(self) -> int:
        return self._mailbox.dropped

    def start(self, notify: Callable[[], None]) -> None:
        self._notify = notify
        self._thread = threading.Thread(target=self._run, name="netprof-sampler", daemon=True)
        self._thread.start()

    def take(self) -> DashboardModel | None:
        return self._mailbox.take()

    def forget_node_context(self) -> None:
        """The node changed: the next analysis reads its context afresh."""
        self.session.forget_node_context()

    def forget_node_context(self) -> None:
        """The node changed: the next analysis reads its context afresh."""
        self.session.forget_node_context()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            if self._thread.is_alive():
                # A read is stuck in the kernel or a netns: detaching under it is not safe;
                # the process is exiting and the kernel detaches everything with it.
                return
        self.session.stop()

    def _run(self) -> None:
        self.started_s = self._clock()
        cpu_at_start = time.thread_time()
        next_tick = self._clock() + self.interval_s
        while not self._stop.wait(max(0.0, next_tick - self._clock())):
            now = self._clock()
            # A late tick (a suspended VM, a long analysis) starts a new schedule rather than
            # sampling several times in a row to catch up.
            next_tick = next_tick + self.interval_s if next_tick + self.interval_s > now else now + self.interval_s
            try:
                model = self._step()
            except NetprofError as exc:
                model = self._failed(str(exc))
            except Exception as exc:  # a bug: keep the UI alive and say so
                model = self._failed(f"internal error: {type(exc).__name__}: {exc}")
            self.worker_cpu_s = time.thread_time() - cpu_at_start
            if self._mailbox.put(model):
                self._notify()

    def _step(self) -> DashboardModel:
        snapshot = self.session.sample()
        self.samples += 1
        interval_doc = self._interval_capture(self.session, snapshot).to_json()
        self._history.push(interval_doc)
        now = self._clock()
        if self._window_doc is None or now - self._analysed_at >= max(
                self.interval_s, ANALYSIS_COST_FACTOR * self._analysis_cost_s):
            started = self._clock()
            self._window_doc = self.session.capture(node_max_age_s=NODE_CONTEXT_MAX_AGE_S).to_json()
            self._analysis_cost_s = self._clock() - started
            self._analysed_at = now
            self.analyses += 1
        return build_model(self._window_doc, interval_doc, self._history.view(), mode="live",
                           interval_s=self.interval_s, sequence=self.samples, updated_monotonic_s=self._clock())

    def _failed(self, message: str) -> DashboardModel:
        # Before the first good sample there is no window yet: an empty one still carries
        # the header, and the header carries the error.
        return build_model(self._window_doc or {}, None, self._history.view(), mode="live", interval_s=self.interval_s,
                           sequence=self.samples, updated_monotonic_s=self._clock(),
                           error=f"sampling failed: {message}")
