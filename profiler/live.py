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
from pathlib import Path
from typing import Callable

from .analysis.detectors import AnalysisContext, analyze
from .capture import Capture
from .errors import NetprofError
from .kernel.features import KernelInfo, probe_kernel, require_capture_ready
from .kernel.loader import BpfLoader
from .pods import PodDirectory
from .probes.base import ProbeStatus
from .sampler import Sampler
from .snapshot import Snapshot
from .sources.base import Source
from .system.node import collect_node_context


class LiveSession:
    def __init__(self, root: Path = Path("/"), sources: list[Source] | None = None,
                 window_s: float | None = None):
        """window_s: how much history to keep (None: everything, for a fixed-length capture)."""
        self.root = root
        self.window_s = window_s
        self.info: KernelInfo = probe_kernel(root)
        self.pods = PodDirectory.default(root)
        self._sources = sources
        self._sampler: Sampler | None = None
        self.loader: BpfLoader | None = None
        self.statuses: list[ProbeStatus] = []
        self.started_at = time.time()
        self._snapshots: collections.deque[Snapshot] = collections.deque()
        # sample() runs on a worker thread while views ask for captures: one lock for both.
        self._lock = threading.Lock()

    def start(self, log: Callable[[str], None] = lambda msg: None) -> list[ProbeStatus]:
        """Check the kernel, compile and attach every source. Raises NetprofError."""
        require_capture_ready(self.info)
        self.loader = BpfLoader(self.info)
        self._sampler = Sampler(self.pods, self._sources)
        try:
            self.statuses = self._sampler.attach(self.loader)
        except BaseException:
            self._sampler.detach()
            raise
        for status in self.statuses:
            if not status.attached:
                log(f"probe {status.name} not attached: {status.error}")
        if not self._sampler.any_attached:
            self._sampler.detach()
            raise NetprofError("no probe could be attached; nothing to capture (see above)")
        self.started_at = time.time()
        return self.statuses

    def sample(self) -> Snapshot:
        """What changed since the previous sample (or since start)."""
        if self._sampler is None:
            raise RuntimeError("sample() before start()")
        snapshot = self._sampler.sample()
        with self._lock:
            self._snapshots.append(snapshot)
            if self.window_s is not None:
                while self._snapshots and snapshot.ended_s - self._snapshots[0].started_s > self.window_s:
                    self._snapshots.popleft()
        return snapshot

    def capture(self, last_s: float | None = None, with_node: bool = True,
                with_findings: bool = True) -> Capture:
        """A Capture of the kept snapshots (or the last `last_s` seconds of them)."""
        with self._lock:
            snapshots = list(self._snapshots)
        if last_s is not None and snapshots:
            end = snapshots[-1].ended_s
            snapshots = [s for s in snapshots if end - s.started_s <= last_s]
        capture = Capture(kernel=self.info, probes=list(self.statuses), started_at=self.started_at,
                          known_pods=self.pods.known())
        for snapshot in snapshots:
            capture.add(snapshot)
        if with_node:
            netns_paths = self.pods.netns_paths()
            capture.node = collect_node_context(netns_paths, self.root)
            if with_findings:
                capture.findings = analyze(capture.to_json(), AnalysisContext(
                    netns_paths={inode: str(path) for inode, path in netns_paths.items()},
                    topology=capture.node.topology,
                    irqbalance_running=capture.node.irqbalance_running,
                    root=self.root,
                ))
        return capture

    def stop(self) -> None:
        if self._sampler is not None:
            self._sampler.detach()
            self._sampler = None

    def __enter__(self) -> "LiveSession":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
