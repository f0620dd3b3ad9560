"""`netprof profile`: attach, sample every interval for a fixed time, detach, keep everything.

Ctrl-C or SIGTERM ends the capture early; what was captured up to then is kept and reported.
"""
from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .analysis.detectors import AnalysisContext, analyze
from .capture import Capture
from .errors import NetprofError
from .kernel.features import probe_kernel, require_capture_ready
from .kernel.loader import BpfLoader
from .pods import PodDirectory
from .sampler import Sampler
from .system.node import collect_node_context
from .snapshot import Snapshot
from .sources.base import Source


@dataclass(frozen=True)
class ProfileOptions:
    duration_s: float
    interval_s: float = 1.0


@contextmanager
def _sigterm_as_interrupt():
    """A capture stopped by `kill` (or a container runtime) ends like Ctrl-C: with a report."""

    def raise_interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_profile(
    options: ProfileOptions,
    on_snapshot: Callable[[Snapshot], None] | None = None,
    on_attached: Callable[[], None] | None = None,
    log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr),
    root: Path = Path("/"),
    sources: list[Source] | None = None,
) -> Capture:
    info = probe_kernel(root)
    require_capture_ready(info)
    pods = PodDirectory.default(root)
    with _sigterm_as_interrupt():
        loader = BpfLoader(info)
        sampler = Sampler(pods, sources)
        try:
            statuses = sampler.attach(loader)
            for status in statuses:
                if not status.attached:
                    log(f"probe {status.name} not attached: {status.error}")
            if not sampler.any_attached:
                raise NetprofError("no probe could be attached; nothing to capture (see above)")
            capture = Capture(kernel=info, probes=statuses, known_pods=pods.known())
            log(f"capturing for {options.duration_s:g}s ({loader.mode}); Ctrl-C ends early and still reports")
            if on_attached:
                on_attached()
            deadline = time.monotonic() + options.duration_s
            try:
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    time.sleep(min(options.interval_s, remaining))
                    snapshot = sampler.sample()
                    capture.add(snapshot)
                    if on_snapshot:
                        on_snapshot(snapshot)
            except KeyboardInterrupt:
                capture.interrupted = True
                # The counts since the last interval are still in the maps: keep them.
                capture.add(sampler.sample())
            try:
                capture.known_pods.update(pods.known())
                netns_paths = pods.netns_paths()
                capture.node = collect_node_context(netns_paths, root)
                capture.findings = analyze(capture.to_json(), AnalysisContext(
                    netns_paths={inode: str(path) for inode, path in netns_paths.items()},
                    topology=capture.node.topology,
                    irqbalance_running=capture.node.irqbalance_running,
                    root=root,
                ))
            except KeyboardInterrupt:
                # A second Ctrl-C: the counts are what matter; leave the node section out.
                capture.interrupted = True
            return capture
        except KeyboardInterrupt:
            raise NetprofError("interrupted before the capture started; nothing was captured") from None
        finally:
            sampler.detach()
