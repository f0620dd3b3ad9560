"""A capture session: attach once, sample every interval, and turn any span of what was
sampled into a Capture with node context and findings.

`netprof profile` runs one session for a fixed time; the TUI and `netprof serve` run one
until they are stopped, keeping a rolling window. Both go through this one path, so a live
view and a one-shot report of the same node always agree.
"""
from __future__ import annotations

import collections
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Iterable

from .analysis.detectors import AnalysisContext, analyze
from .capture import Capture
from .detail_tier import TierPolicy, TierSettings
from .cost import COST_SAMPLE_EVERY, BpfStatsSwitch, Cost, CostMeter, CostReading, MeteredLoader, cost_of_span
from .errors import NetprofError
from .inert import inert
from .kernel.features import KernelInfo, probe_kernel, require_capture_ready
from .kernel.loader import BpfLoader
from .netns_names import PodIdentity
from .pod_listing import default_pod_directory
from .probes.base import ProbeStatus
from .sampler import Sampler
from .snapshot import FULL_TIER, Snapshot
from .sources.base import Source
from .system.irqbalance import read_irqbalance
from .system.node import NodeContext, collect_node_context


class LiveSession:
    def __init__(self, root: Path = Path("/"), sources: list[Source] | None = None,
                 window_s: float | None = None, measure_cost: bool = True,
                 cost_sample_every: int = COST_SAMPLE_EVERY, tier: TierSettings | None = None):
        """window_s: how much history to keep (None: everything, for a fixed-length capture).
        measure_cost: give captures a `cost` section (profiler/cost.py), timing the BPF
        programs during the first interval and one in every `cost_sample_every` after it.
        tier: which detail programs run and when that changes (profiler/detail_tier.py;
        default: the full tier, pinned)."""
        self.root = root
        # (when, the pods it covers, it): LiveSession.capture's node_max_age_s.
        self._node_cache: tuple[float, frozenset[tuple[int, Path]], NodeContext] | None = None
        self.window_s = window_s
        self.info: KernelInfo = probe_kernel(root)
        self.pods = default_pod_directory(root)
        self._sources = sources
        self._sampler: Sampler | None = None
        self.loader: BpfLoader | None = None
        self.statuses: list[ProbeStatus] = []
        self.started_at = time.time()
        self._snapshots: collections.deque[Snapshot] = collections.deque()
        # The cost counters read at the end of each kept snapshot, with whether its interval
        # was timed (BPF statistics on throughout), and the reading just before the first.
        self._readings: collections.deque[tuple[CostReading, bool]] = collections.deque()
        self._window_start_reading: CostReading | None = None
        self._stats = BpfStatsSwitch() if measure_cost else None
        self._cost_sample_every = max(1, cost_sample_every)
        self._intervals = 0
        self._meter: CostMeter | None = None
        self._last_reading: CostReading | None = None
        # What the latest sampled interval cost (None when cost is not measured): serve
        # adds these up into counters.
        self.last_interval_cost: Cost | None = None
        self._stats_state: dict = {}
        # sample() runs on a worker thread while views ask for captures: one lock for both.
        self._lock = threading.Lock()
        # netns inode → Kubernetes pod, remembered from the first time a resolver knew it, so
        # a pod deleted long before the capture ends keeps its namespace/name/containers.
        self._identities: dict[int, PodIdentity] = {}
        # Decided once per interval here, the one place: every view reads it from the capture.
        self.tier_policy = TierPolicy(tier)
        self._log: Callable[[str], None] = lambda msg: None

    def start(self, log: Callable[[str], None] | None = None) -> list[ProbeStatus]:
        """Check the kernel, compile and attach every source. Raises NetprofError.
        Without `log`, probe notes are dropped, but a distrusted shim cache is still said on
        stderr (the loader's default)."""
        require_capture_ready(self.info)
        loader = MeteredLoader(self.info, log=log)
        log = log or (lambda msg: None)
        self.loader = loader
        self._sampler = Sampler(self.pods, self._sources)
        self._log = log
        # Before attach, so a quiet start never runs the detail programs for an interval.
        self._sampler.set_detail(self.tier_policy.detail_on)
        if self._stats is not None:
            # Before attach, so the first interval is timed like every other.
            self._stats.enable()
        try:
            self.statuses = self._sampler.attach(self.loader)
        except BaseException:
            self._sampler.detach()
            self._disable_stats()
            raise
        for status in self.statuses:
            if not status.attached:
                # The error may quote the kernel or BCC: inert before a terminal sees it.
                log(inert(f"probe {status.name} not attached: {status.error}"))
        if not self._sampler.any_attached:
            self._sampler.detach()
            self._disable_stats()
            raise NetprofError("no probe could be attached; nothing to capture (see above)")
        self.started_at = time.time()
        if self._stats is not None:
            self._stats_state = self._stats.describe()
            self._meter = CostMeter(loader.loaded)
            self._window_start_reading = self._meter.read()
            self._last_reading = self._window_start_reading
        return self.statuses

    def sample(self, final: bool = False) -> Snapshot:
        """What changed since the previous sample (or since start). `final`: the last sample
        of a capture — pods read on a budget are all read, so the capture misses nothing."""
        if self._sampler is None:
            raise RuntimeError("sample() before start()")
        snapshot = self._switch_tier(self._sampler.sample(final))
        self._remember_identities(pod.netns for pod in snapshot.pods)
        reading = self._meter.read(self._sampler.program_stats) if self._meter is not None else None
        timed = self._stats is not None and self._stats.enabled
        if reading is not None:
            self._time_next_interval()
            if self._last_reading is not None:
                self.last_interval_cost = cost_of_span(self._last_reading, [reading], [timed],
                                                       bpf_stats=self._stats_state)
            self._last_reading = reading
        with self._lock:
            self._snapshots.append(snapshot)
            if reading is not None:
                self._readings.append((reading, timed))
            if self.window_s is not None:
                while self._snapshots and snapshot.ended_s - self._snapshots[0].started_s > self.window_s:
                    self._snapshots.popleft()
                    if self._readings:
                        self._window_start_reading = self._readings.popleft()[0]
        return snapshot

    def _node_context(self, netns_paths: dict[int, Path], max_age_s: float) -> NodeContext:
        now = time.monotonic()
        cached = self._node_cache
        pods = frozenset(netns_paths.items())
        if cached is not None and now - cached[0] < max_age_s and cached[1] == pods:
            return cached[2]
        node = collect_node_context(netns_paths, self.root)
        self._node_cache = (now, pods, node)
        return node

    def forget_node_context(self) -> None:
        """The node changed (a fix was applied): the next capture reads it afresh."""
        self._node_cache = None

    def restart_window(self) -> None:
        """Start the kept history afresh, now: what the programs counted since the last
        sample is read (so the next sample holds only what comes after) and dropped with
        everything kept before. Pods, identities and the tier carry over.

        Not a final sample: that one gives each drop site's pending events to its last stack
        for good, and the kernel would report them again to the next window. So an idle pod
        whose counters are read on a budget may bring a little of the gap into the next window."""
        self.sample()
        with self._lock:
            self._snapshots.clear()
            self._readings.clear()
            self._window_start_reading = self._last_reading
        self.started_at = time.time()

    def _switch_tier(self, snapshot: Snapshot) -> Snapshot:
        """Let the tier policy judge the interval; a switch is made now and recorded on the
        interval that caused it."""
        switch = self.tier_policy.observe(snapshot, time.time())
        if switch is None:
            return snapshot
        problems = self._sampler.set_detail(switch.to == FULL_TIER)
        self._log(inert(f"detail tier → {switch.to}: {switch.why}"))
        if problems:
            switch = replace(switch, problems=tuple(problems))
            for problem in problems:
                self._log(inert(f"detail tier {switch.to}: {problem}"))
        return replace(snapshot, tier_switch=switch)

    def _remember_identities(self, inodes: Iterable[int], refresh: bool = False) -> None:
        # sample() and capture() may run on different threads (serve, the TUI's export).
        # A pod read between its sandbox and its first container has no containers yet:
        # that identity is asked again (and every known one when a capture is assembled),
        # so the first reading does not stick for the rest of the capture.
        for inode in inodes:
            remembered = self._identities.get(inode)
            if refresh or remembered is None or not remembered.containers:
                identity = self.pods.identity(inode)
                if identity is not None:
                    with self._lock:
                        self._identities[inode] = identity

    def identities(self) -> dict[int, PodIdentity]:
        """netns inode → Kubernetes pod, for every pod a resolver has named so far."""
        return self._known_identities()

    def _known_identities(self) -> dict[int, PodIdentity]:
        with self._lock:
            return dict(self._identities)

    def _time_next_interval(self) -> None:
        """Statistics on for one interval in every `cost_sample_every`, off otherwise."""
        self._intervals += 1
        if self._intervals % self._cost_sample_every == 0:
            self._stats.enable()
        else:
            self._stats.disable()

    def capture(self, last_s: float | None = None, with_node: bool = True,
                with_findings: bool = True, node_max_age_s: float = 0.0) -> Capture:
        """A Capture of the kept snapshots (or the last `last_s` seconds of them).
        node_max_age_s: the node context (IRQs, sysctls, every pod's sysctls) of an earlier
        capture may be reused if it is younger than this and the pods are the same (the
        dashboard analyses every second; reading it all costs more than the analysis)."""
        with self._lock:
            snapshots = list(self._snapshots)
            readings = list(self._readings)
            window_start = self._window_start_reading
        # One reading per kept snapshot (none at all when cost is not measured).
        metered = self._meter is not None and window_start is not None and len(readings) == len(snapshots)
        first = 0
        if last_s is not None and snapshots:
            end = snapshots[-1].ended_s
            first = next((i for i, s in enumerate(snapshots) if end - s.started_s <= last_s), len(snapshots))
            snapshots = snapshots[first:]
        known = self.pods.known()
        self._remember_identities(known, refresh=True)
        capture = Capture(kernel=self.info, probes=list(self.statuses), started_at=self.started_at,
                          known_pods=known, pod_identities=self._known_identities(),
                          tier=self.tier_policy.settings)
        for snapshot in snapshots:
            capture.add(snapshot)
        if metered:
            start = readings[first - 1][0] if first > 0 else window_start
            span = readings[first:]
            capture.cost = cost_of_span(start, [r for r, _ in span], [t for _, t in span],
                                        bpf_stats={**self._stats_state, "sample_every": self._cost_sample_every})
        if with_node:
            netns_paths = self.pods.netns_paths()
            capture.node = self._node_context(netns_paths, node_max_age_s)
            if with_findings:
                # Analysis reads the typed document of this capture; the capture keeps the
                # sections it was built from, so saving it does not add it up again.
                capture.findings = analyze(capture.document(), AnalysisContext(
                    netns_paths={inode: str(path) for inode, path in netns_paths.items()},
                    topology=capture.node.topology,
                    irqbalance_running=capture.node.irqbalance_running,
                    irqbalance=read_irqbalance(self.root) if capture.node.irqbalance_running else None,
                    root=self.root,
                ))
        return capture

    def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.detach()
            self._sampler = None
        self._disable_stats()

    def _disable_stats(self) -> None:
        if self._stats is not None:
            self._stats.disable()

    def __enter__(self) -> "LiveSession":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
