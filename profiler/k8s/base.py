"""What every Kubernetes resolver shares: the pod identity it hands out, the validation of
names read from the node, and a cache that rescans lazily and forgets with expiry.

A resolver's `_scan()` lists what the node has now (`PodNetns`: netns inode, pod, a path to
enter the netns). The cache answers `lookup` / `known` / `paths` (the `NetnsResolver`
protocol of `profiler.pods`) from the last scan and rescans at most every `rescan_s`: on a
lookup of an inode it does not know, or when asked for the full list. An inode first asked
about less than `rescan_s` ago gets rescans sooner (at most every `first_miss_rescan_s`): it
is most likely a pod being created — its netns can carry packets (CNI setup) before the
runtime has written the sandbox's record — and a pod is expected to be named in the first
interval that shows its traffic, not after the capture has labelled it by its netns. A pod that vanished
keeps answering lookups for `forget_after_s` (an event read from a BPF map can name a netns
that died a moment ago), then is forgotten: netns inode numbers are reused by the kernel.
`PodDirectory` itself remembers every label it handed out for the rest of the capture.

The sampler thread labels pods while a view (TUI, `serve`) assembles a capture on another:
one lock per resolver keeps a rescan and a lookup from seeing each other half done.
"""
from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

# PodIdentity lives below pods and k8s (the directory hands it out too); the resolvers use it from here.
from ..netns_names import PodIdentity

# Kubernetes' own validation (k8s.io/apimachinery/pkg/util/validation): a namespace and a
# container name are DNS-1123 labels, a pod name a DNS-1123 subdomain. The API server never
# admits anything else, so text that does not match did not come from it: it is dropped,
# never shown.
_DNS1123_LABEL = r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?"
DNS1123_LABEL = re.compile(rf"^{_DNS1123_LABEL}$")
DNS1123_SUBDOMAIN = re.compile(rf"^{_DNS1123_LABEL}(?:\.{_DNS1123_LABEL})*$")
MAX_SUBDOMAIN_LEN = 253
# A pod UID is a UUID; a static (mirror) pod's UID is the 32-hex-digit hash kubelet makes of
# its manifest.
POD_UID = re.compile(r"^(?:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[0-9a-f]{32})$")
MAX_CONTAINERS = 64  # more than any pod spec a person writes; a bound on hostile directories
# Inodes remembered as "asked about and not found"; past this the memory starts over (each
# forgotten one may then cost one more early rescan, nothing else).
MAX_MISSES = 4096


def valid_namespace(text: object) -> str | None:
    return text if isinstance(text, str) and DNS1123_LABEL.match(text) else None


def valid_pod_name(text: object) -> str | None:
    if isinstance(text, str) and len(text) <= MAX_SUBDOMAIN_LEN and DNS1123_SUBDOMAIN.match(text):
        return text
    return None


def valid_container_name(text: object) -> str | None:
    return text if isinstance(text, str) and DNS1123_LABEL.match(text) else None


def valid_uid(text: object) -> str | None:
    return text if isinstance(text, str) and POD_UID.match(text) else None


@dataclass(frozen=True)
class PodNetns:
    inode: int
    pod: PodIdentity
    netns_path: Path            # what `run_in_netns` opens to enter it
    from_sandbox: bool = True   # False: inferred from an app container's record (weaker)


def unique_by_inode(candidates: Iterable[PodNetns]) -> dict[int, PodNetns]:
    """One pod per netns. A sandbox's record beats one inferred from a container; two
    different pods claiming one netns at the same strength are ambiguous and name neither
    (only the node's own netns is shared by pods, and that one is `host`)."""
    best: dict[int, PodNetns] = {}
    ambiguous: set[int] = set()
    for candidate in candidates:
        current = best.get(candidate.inode)
        if current is None or (candidate.from_sandbox and not current.from_sandbox):
            best[candidate.inode] = candidate
            ambiguous.discard(candidate.inode)
        elif candidate.from_sandbox == current.from_sandbox and candidate.pod.key != current.pod.key:
            ambiguous.add(candidate.inode)
    return {inode: entry for inode, entry in best.items() if inode not in ambiguous}


class CachedScanResolver:
    """Base of the Kubernetes resolvers: `_scan()` is the only thing a subclass writes."""

    source = ""

    def __init__(self, rescan_s: float = 2.0, forget_after_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, first_miss_rescan_s: float = 0.25):
        self._rescan_s = rescan_s
        self._first_miss_rescan_s = min(first_miss_rescan_s, rescan_s)
        self._missed: dict[int, float] = {}  # inode looked up and not found → when, first
        self._forget_after_s = forget_after_s
        self._clock = clock
        self._live: dict[int, PodNetns] = {}
        self._gone: dict[int, tuple[PodNetns, float]] = {}  # inode → (entry, when it vanished)
        self._scanned_at = float("-inf")
        self._lock = threading.RLock()

    def _scan(self) -> Iterable[PodNetns]:
        raise NotImplementedError

    def refresh(self) -> None:
        with self._lock:
            now = self._clock()
            self._scanned_at = now
            found = unique_by_inode(self._scan())
            for inode, entry in self._live.items():
                if inode not in found:
                    self._gone[inode] = (entry, now)
            self._live = found
            self._gone = {inode: (entry, since) for inode, (entry, since) in self._gone.items()
                          if inode not in found and now - since < self._forget_after_s}

    def _refresh_if_stale(self, young_miss: bool = False) -> None:
        limit = self._first_miss_rescan_s if young_miss else self._rescan_s
        if self._clock() - self._scanned_at >= limit:
            self.refresh()

    def _entry(self, inode: int) -> PodNetns | None:
        with self._lock:
            gone = self._gone.get(inode)
            if gone is not None and self._clock() - gone[1] >= self._forget_after_s:
                del self._gone[inode]
                gone = None
            if inode not in self._live and gone is None:
                first_missed = self._missed.get(inode)
                self._refresh_if_stale(
                    young_miss=first_missed is None or self._clock() - first_missed < self._rescan_s)
            entry = self._live.get(inode)
            if entry is None and inode not in self._gone and inode not in self._missed:
                if len(self._missed) >= MAX_MISSES:
                    self._missed.clear()
                self._missed[inode] = self._clock()
            if entry is None and inode in self._gone:
                entry = self._gone[inode][0]
            return entry

    def lookup(self, inode: int) -> str | None:
        entry = self._entry(inode)
        return entry.pod.label if entry else None

    def identity(self, inode: int) -> PodIdentity | None:
        entry = self._entry(inode)
        return entry.pod if entry else None

    def known(self) -> dict[int, str]:
        with self._lock:
            self._refresh_if_stale()
            return {inode: entry.pod.label for inode, entry in self._live.items()}

    def paths(self) -> dict[int, Path]:
        with self._lock:
            self._refresh_if_stale()
            return {inode: entry.netns_path for inode, entry in self._live.items()}
