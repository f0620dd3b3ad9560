"""The node's pod directory, put together from the generic resolvers (`profiler.pods`) and the
Kubernetes ones (`profiler.k8s`), which know nothing of each other; and `netprof pods`.

`netprof pods`: every network namespace this node has, the pod netprof names it after,
and where that name came from — what a user checks before trusting per-pod numbers.

Nothing is captured: the same `PodDirectory` the profiler uses is asked once, so the list is
exactly what a capture started now would label (the runtime's record, a kubepods cgroup,
a /run/netns name, or nothing).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .inert import inert
from .k8s import kubernetes_resolvers
from .netns_names import HOST_LABEL, HostResolver
from .pods import NamedNetnsResolver, PodDirectory


def default_pod_directory(root: Path = Path("/")) -> PodDirectory:
    """The directory a capture uses on a node.

    The node's netns first: hostNetwork pods' processes live in it, yet it is no one pod's.
    Then the Kubernetes resolvers (containerd, CRI-O, kubepods cgroups), which name a CNI
    netns better than its /run/netns/cni-<uuid> name.
    """
    return PodDirectory([HostResolver(root), *kubernetes_resolvers(root), NamedNetnsResolver(root)])


@dataclass(frozen=True)
class NetnsRow:
    netns: int
    pod: str
    source: str          # containerd, cri-o, cgroup+pod-logs, …; host; run/netns; none
    uid: str = ""
    containers: tuple[str, ...] = ()
    path: str = ""       # how netprof enters it

    def to_json(self) -> dict:
        return {"netns": self.netns, "pod": inert(self.pod), "source": inert(self.source), "uid": inert(self.uid),
                "containers": [inert(c) for c in self.containers], "path": inert(self.path)}


def netns_rows(directory: PodDirectory) -> list[NetnsRow]:
    """One row per netns the resolvers know or can enter, Kubernetes pods first."""
    labels = directory.known()
    paths = directory.netns_paths()
    rows = []
    for inode in sorted(set(labels) | set(paths)):
        label = labels.get(inode) or directory.label(inode)
        identity = directory.identity(inode)
        if identity is not None:
            source, uid, containers = identity.source, identity.uid, identity.containers
        elif label == HOST_LABEL:
            source, uid, containers = "host", "", ()
        elif label.startswith("netns:"):
            source, uid, containers = "none", "", ()
        else:
            source, uid, containers = "run/netns", "", ()
        rows.append(NetnsRow(inode, label, source, uid, containers, str(paths.get(inode, ""))))
    order = {"host": 1, "run/netns": 2, "none": 3}
    return sorted(rows, key=lambda r: (order.get(r.source, 0), r.pod, r.netns))


def render_rows(rows: list[NetnsRow]) -> str:
    """A plain table; every field from the node goes through inert()."""
    header = ("NETNS", "POD", "SOURCE", "UID", "CONTAINERS", "PATH")
    table = [header] + [(str(r.netns), inert(r.pod), inert(r.source), inert(r.uid),
                         inert(",".join(r.containers)) or "-", inert(r.path)) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)) + "  " + row[-1]
             for row in table]
    return "\n".join(line.rstrip() for line in lines) + "\n"
