"""Network-namespace inode → pod label.

A pod is its network namespace. Resolvers are tried best first; each knows one source of
names. The Kubernetes resolvers (containerd, CRI-O, kubepods cgroups) plug in ahead of the
generic ones through the same `NetnsResolver` protocol (`profiler.netns_names`); the node's
usual directory is put together in `profiler.pod_listing.default_pod_directory`, so this
module knows nothing of Kubernetes.

Labels are remembered for the whole capture: a namespace that vanishes mid-run keeps the
name it had, which is normal on a node where pods come and go.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from .netns_names import NetnsResolver, PodIdentity, netns_inode, sanitize_label


class NamedNetnsResolver:
    """Names from `ip netns` (/run/netns/<name>), rescanned at most every `rescan_s` seconds
    when an unknown inode shows up."""

    def __init__(self, root: Path = Path("/"), rescan_s: float = 1.0):
        self._dir = root / "run/netns"
        self._rescan_s = rescan_s
        self._names: dict[int, str] = {}
        self._paths: dict[int, Path] = {}  # only namespaces present at the last scan
        self._scanned_at = float("-inf")

    def _scan(self) -> None:
        self._scanned_at = time.monotonic()
        try:
            entries = list(os.scandir(self._dir))
        except OSError:
            return
        self._paths = {}
        for entry in entries:
            inode = netns_inode(Path(entry.path))
            if inode is not None:
                self._names[inode] = sanitize_label(entry.name)
                self._paths[inode] = Path(entry.path)

    def lookup(self, inode: int) -> str | None:
        if inode not in self._names and time.monotonic() - self._scanned_at >= self._rescan_s:
            self._scan()
        return self._names.get(inode)

    def known(self) -> dict[int, str]:
        self._scan()
        return dict(self._names)

    def paths(self) -> dict[int, Path]:
        if time.monotonic() - self._scanned_at >= self._rescan_s:
            self._scan()
        return dict(self._paths)


class PodDirectory:
    """Labels every netns inode the probes report, best resolver first."""

    def __init__(self, resolvers: list[NetnsResolver]):
        self._resolvers = resolvers
        self._labels: dict[int, str] = {}
        # Which resolver gave each label (its index; len(resolvers) for netns:<inode>). A
        # label from a worse resolver is replaced when a better one learns the netns: a new
        # pod's /run/netns/cni-<uuid> name exists before its runtime record does.
        self._rank: dict[int, int] = {}

    def identity(self, inode: int) -> PodIdentity | None:
        """The Kubernetes pod (namespace, name, UID, containers) of a netns, if a Kubernetes
        resolver knows it (`profiler.netns_names.PodIdentity`), else None."""
        for resolver in self._resolvers:
            identity = getattr(resolver, "identity", None)
            found = identity(inode) if identity is not None else None
            if found is not None:
                return found
        return None

    def known(self) -> dict[int, str]:
        """Every pod the resolvers can name now, merged with every label handed out so far."""
        for rank, resolver in enumerate(self._resolvers):
            for inode, label in resolver.known().items():
                if rank < self._rank.get(inode, len(self._resolvers)):
                    self._labels[inode] = label
                    self._rank[inode] = rank
        return {**self._labels}

    def netns_paths(self) -> dict[int, Path]:
        """Every live netns the resolvers can enter, best resolver's path first."""
        found: dict[int, Path] = {}
        for resolver in reversed(self._resolvers):
            found.update(resolver.paths())
        return found

    def label(self, inode: int) -> str:
        # Resolvers better than the one that named it are asked again, and that one too: the
        # kernel reuses a freed netns inode, so a new pod may now own it. A vanished pod keeps
        # the label it had (its resolver still remembers it).
        rank = self._rank.get(inode, len(self._resolvers))
        for better, resolver in enumerate(self._resolvers[:rank + 1]):
            name = resolver.lookup(inode)
            if name:
                self._labels[inode] = name
                self._rank[inode] = better
                return name
        if inode in self._labels:
            return self._labels[inode]
        if inode == 0:
            # The probe could not read the socket's namespace (no socket on the event).
            return "unknown"
        self._labels[inode] = f"netns:{inode}"
        self._rank[inode] = len(self._resolvers)
        return self._labels[inode]
