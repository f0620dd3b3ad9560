"""`netprof serve`: the live counters and histograms of this node for Prometheus.

One `LiveSession` samples every interval on the main thread; each snapshot is added to
`ServedCapture`, the sums since start (capture.SnapshotTotals, as for `profile`), so every
counter only ever grows while the process runs (a scrape never sees a window sum shrink; the
counts of a pod gone for GONE_POD_TTL_S move to its `(pods gone)` series). A prometheus-client collector renders the
totals on each scrape, through the same code as `netprof export --format prometheus`.

Outputs: an HTTP endpoint bound exactly where --listen says (127.0.0.1 by default: exposing
it on a pod network is the operator's choice; one I/O thread whatever the clients do, see
metrics_http.py), and/or --textfile, rewritten atomically every interval for node_exporter's
textfile collector (a failed rewrite is counted and logged, never fatal: textfile.py). SIGINT and SIGTERM stop the loop; the
probes are detached and the textfile removed, so node_exporter never serves numbers of a
netprof that is gone.
"""
from __future__ import annotations

import math
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

from .capture import MAX_DROP_SITES, SCHEMA, SnapshotTotals, cpu_json, pod_json
from .cost import Cost, ProgramCost
from .detail_tier import AUTO, TierSettings
from .errors import NetprofError
from .exports import atomic_write_text
from .netns_names import PodIdentity
from .probes.base import ProbeStatus
from .snapshot import Snapshot

DEFAULT_LISTEN = "127.0.0.1:9464"
DEFAULT_INTERVAL_S = 5.0
# A pod whose netns is gone keeps its series this long (a last scrape sees its final
# counts), then its counts join the `(pods gone)` series, so pod churn does not grow the
# exposition forever and the sums over pods never go down.
GONE_POD_TTL_S = 300.0


def parse_listen(text: str) -> tuple[str, int]:
    """"HOST:PORT" or "[V6]:PORT" → (host, port). Port 0 picks a free port."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise NetprofError(f"--listen wants HOST:PORT (e.g. {DEFAULT_LISTEN}), got {text!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        port = int(port_text)
    except ValueError:
        raise NetprofError(f"--listen: not a port number: {port_text!r}") from None
    if not 0 <= port <= 65535:
        raise NetprofError(f"--listen: port {port} is out of range")
    return host, port


class ServedCapture:
    """Every snapshot since start, added up (capture.SnapshotTotals), as a profile document
    for the exports. Pods gone longer than GONE_POD_TTL_S are pruned into `(pods gone)`."""

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, started_at: float | None = None):
        self._lock = threading.Lock()
        self.started_at = time.time() if started_at is None else started_at
        # Per-flow and per-stack rows are not exported, and would grow with every connection.
        self._totals = SnapshotTotals(prune_after=max(1, math.ceil(GONE_POD_TTL_S / interval_s)), detail=False)
        self._probes: list[ProbeStatus] = []
        self._kernel: dict | None = None
        self._identities: dict[int, PodIdentity] = {}
        self._cost: Cost | None = None
        self._tier: TierSettings | None = None

    def set_tier(self, settings: TierSettings) -> None:
        """The detail tier asked for (--tier); the intervals say what ran."""
        with self._lock:
            self._tier = settings

    def set_probes(self, statuses: list[ProbeStatus]) -> None:
        with self._lock:
            self._probes = list(statuses)

    def set_node(self, kernel: dict, cpus: Iterable[int]) -> None:
        """The kernel (for build_info) and the online CPUs, each of which gets its per-CPU
        series from the start, at 0 until something happens there."""
        with self._lock:
            self._kernel = dict(kernel)
            self._totals.know_cpus(cpus)

    def add(self, snapshot: Snapshot, present_pods: dict[int, str],
            identities: Mapping[int, PodIdentity] | None = None, cost: Cost | None = None) -> None:
        """Fold one interval in; `present_pods` (netns inode → label) are the pods that exist
        now, so quiet ones show zeros and vanished ones age out. `identities`: the Kubernetes
        pods known so far; `cost`: what netprof cost over this interval."""
        with self._lock:
            self._identities.update(identities or {})
            if cost is not None:
                self._cost = cost if self._cost is None else _add_costs(self._cost, cost)
            for netns in self._totals.add(snapshot, present_pods):
                self._identities.pop(netns, None)

    def document(self) -> dict:
        with self._lock:
            # Drop sites with a series of their own, first come first served up to the cap, and
            # kept: a site never moves between its own series and "other", so both only grow.
            sites = list(self._totals.drop_site_counts().items())[:MAX_DROP_SITES]
            return {
                "schema": SCHEMA,
                "started_at": self.started_at,
                "duration_s": round(self._totals.sampled_s, 3),
                "intervals": self._totals.intervals,
                "kernel": self._kernel,
                "probes": [status.to_json() for status in self._probes],
                "pods": [pod_json(pod, self._identities.get(pod.netns)) for pod in self._totals.pods()],
                "cpus": [cpu_json(cpu) for cpu in self._totals.cpus()],
                "drop_sites": [{"reason": reason, "symbol": symbol, "count": count}
                               for (reason, symbol), count in sites],
                "lost_events": self._totals.lost(),
                "ignored_events": self._totals.ignored(),
                "cost": self._cost.to_json() if self._cost is not None else None,
                "tier": self._totals.tiers.to_json(self._tier),
            }


def _add_costs(a: Cost, b: Cost) -> Cost:
    """Two consecutive spans' costs as one: program and CPU counters add, memory is the later."""
    programs = {(p.program, p.hook): p for p in a.programs}
    for p in b.programs:
        seen = programs.get((p.program, p.hook))
        programs[(p.program, p.hook)] = p if seen is None else ProgramCost(
            p.program, p.hook, seen.events + p.events, seen.run_time_ns + p.run_time_ns,
            seen.recursion_misses + p.recursion_misses)
    return replace(b, duration_s=a.duration_s + b.duration_s, timed_s=a.timed_s + b.timed_s,
                   programs=tuple(programs.values()),
                   process_user_cpu_s=a.process_user_cpu_s + b.process_user_cpu_s,
                   process_system_cpu_s=a.process_system_cpu_s + b.process_system_cpu_s,
                   peak_rss_bytes=max(a.peak_rss_bytes, b.peak_rss_bytes))


@dataclass(frozen=True)
class ServeOptions:
    listen: tuple[str, int] | None = ("127.0.0.1", 9464)   # None: no HTTP endpoint
    textfile: Path | None = None
    interval_s: float = DEFAULT_INTERVAL_S
    per_cpu: bool = True   # False: per-CPU families summed over the node (no cpu label)
    # quiet until trouble (profiler/detail_tier.py): serve runs for days on every node.
    tier: TierSettings = field(default_factory=lambda: TierSettings(mode=AUTO))


def start_metrics_server(host: str, port: int, registry, log: Callable[[str], None] = lambda msg: None, **limits):
    """The /metrics endpoint, serving on its own thread until shutdown(). Bounded whatever the
    clients do: one I/O thread, deadlines on slow clients, a deep backlog (metrics_http.py)."""
    from .metrics_http import MetricsServer

    return MetricsServer(host, port, registry, log=log, **limits).start()


@contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    """SIGINT and SIGTERM end the loop at the next wait instead of raising mid-sample."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, lambda signum, frame: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_serve(options: ServeOptions, log: Callable[[str], None], stop: threading.Event | None = None,
              sources=None, root: Path = Path("/")) -> int:
    from prometheus_client import ProcessCollector
    from prometheus_client.exposition import generate_latest

    from .exports.prometheus import registry_for
    from .live import LiveSession
    from .system.cpus import read_cpus_online
    from .textfile import TextfileWriter

    stop = stop or threading.Event()
    totals = ServedCapture(options.interval_s)
    totals.set_tier(options.tier)
    # The textfile gets netprof's metrics only: node_exporter has process_* metrics of its own.
    textfile_registry = registry_for(totals.document, options.per_cpu)
    http_registry = registry_for(totals.document, options.per_cpu)
    ProcessCollector(registry=http_registry)
    if options.textfile is not None and not options.textfile.name.endswith(".prom"):
        log(f"note: node_exporter's textfile collector reads only *.prom files, not {options.textfile.name}")

    def write_textfile() -> None:
        if options.textfile is not None:
            # 0640, not the 0600 of every other export: node_exporter runs as its own user, not
            # root, and must read this file. It does through the file's group (a setgid textfile
            # directory gives new files its group); other users still cannot read pod names.
            atomic_write_text(options.textfile, generate_latest(textfile_registry).decode(), mode=0o640)

    # A failed rewrite is counted and logged, never raised: /metrics stays up (textfile.py).
    textfile = TextfileWriter(options.textfile, write_textfile, log) if options.textfile is not None else None
    if textfile is not None:
        http_registry.register(textfile)
        textfile_registry.register(textfile)

    server = None
    with _stop_on_signals(stop):
        if options.listen is not None:
            host, port = options.listen
            try:
                server = start_metrics_server(host, port, http_registry, log=log)
            except OSError as exc:
                raise NetprofError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
            bound_port = server.server_address[1]
            shown = f"[{host}]" if ":" in host else host
            log(f"serving metrics on http://{shown}:{bound_port}/metrics")
        try:
            # A shallow window: the totals keep the sums, the session only what a view might ask.
            with LiveSession(root=root, sources=sources, window_s=options.interval_s * 2,
                             tier=options.tier) as session:
                statuses = session.start(log)
                totals.set_probes(statuses)
                totals.set_node(session.info.to_json(), read_cpus_online(root))
                if textfile is not None:
                    textfile.write()
                    log(f"writing {options.textfile} every {options.interval_s:g}s")
                log(f"sampling every {options.interval_s:g}s ({session.loader.mode}); detail tier "
                    f"{options.tier.mode} (now {session.tier_policy.tier}); Ctrl-C or SIGTERM stops")
                next_at = time.monotonic() + options.interval_s
                while not stop.wait(max(0.0, next_at - time.monotonic())):
                    snapshot = session.sample()
                    totals.add(snapshot, {netns: session.pods.label(netns) for netns in session.pods.netns_paths()},
                               session.identities(), session.last_interval_cost)
                    if textfile is not None:
                        textfile.write()
                    # Behind schedule (a slow sample): the next one comes now, not in a burst.
                    next_at = max(next_at + options.interval_s, time.monotonic())
        finally:
            if server is not None:
                server.shutdown()
                server.server_close()
            if options.textfile is not None:
                try:
                    options.textfile.unlink(missing_ok=True)
                except OSError as exc:  # its folder was replaced by a file, or is read-only now
                    log(f"could not remove {options.textfile}: {exc.strerror or exc}")
    log("stopped; probes detached")
    return 0
