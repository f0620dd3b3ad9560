"""Kubernetes pod names for network namespaces, from what the node already has.

No API server is asked: the container runtime's state (containerd, CRI-O), the kubepods
cgroups in /proc and kubelet's directories name the pods. Each source is one resolver with
the `NetnsResolver` surface of `profiler.netns_names` (`lookup`, `known`, `paths`) plus
`identity(inode) -> PodIdentity` (namespace, name, UID, container names).
`profiler.pod_listing.default_pod_directory` puts them ahead of the generic resolvers (named netns, netns:<inode>).

Where the node's files are: `root` (default `/`) holds /proc; the runtime and kubelet state
is read from `node_root`, which is `root` unless the environment says
`NETPROF_NODE_ROOT=/host` (a `kubectl debug node/…` pod sees the node's filesystem there).
"""
from __future__ import annotations

import os
from pathlib import Path

from .base import CachedScanResolver, PodIdentity, PodNetns
from .cgroups import CgroupResolver
from .containerd import ContainerdResolver
from .crio import CrioResolver
from .kubelet import KubeletPods

NODE_ROOT_ENV = "NETPROF_NODE_ROOT"

__all__ = ["CachedScanResolver", "CgroupResolver", "ContainerdResolver", "CrioResolver", "KubeletPods",
           "PodIdentity", "PodNetns", "kubernetes_resolvers", "node_root_for"]


def node_root_for(root: Path) -> Path:
    override = os.environ.get(NODE_ROOT_ENV)
    return Path(override) if override else root


def kubernetes_resolvers(root: Path = Path("/"), node_root: Path | None = None) -> list[CachedScanResolver]:
    """The Kubernetes resolvers, best first: the runtimes' own records name a pod's netns
    exactly; the cgroup join names it by UID (and kubelet's directories by name)."""
    node_root = node_root if node_root is not None else node_root_for(root)
    return [
        ContainerdResolver(root, node_root),
        CrioResolver(root, node_root),
        CgroupResolver(root, KubeletPods(node_root)),
    ]
