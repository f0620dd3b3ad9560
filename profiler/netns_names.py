"""What a network namespace is called, and how to tell which one a path is.

Below both `profiler.pods` (the directory that labels every netns the probes report) and
`profiler.k8s` (the Kubernetes resolvers): the label rules (`sanitize_label`, `HOST_LABEL`),
the `NetnsResolver` protocol every resolver has, the inode of an nsfs file or a /proc ns link,
the node's own netns (`HostResolver`), and a Kubernetes pod's identity (`PodIdentity`).
"""
from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from .inert import is_inert

HOST_LABEL = "host"
MAX_LABEL_LEN = 253  # a Kubernetes name's limit; longer text is not a label anyone typed


class NetnsResolver(Protocol):
    def lookup(self, inode: int) -> str | None:
        """A label for this netns inode, or None if this resolver does not know it."""

    def known(self) -> dict[int, str]:
        """Every netns this resolver can name right now (quiet pods included)."""

    def paths(self) -> dict[int, Path]:
        """A path to enter each netns it knows (setns), for per-netns counters."""


def sanitize_label(text: str) -> str:
    """Labels come from files other programs wrote: keep them bounded, and replace by '?'
    each character `inert()` would not leave as it is (it alone decides what is safe; a label
    is a name users filter and match on, so it gets one short mark, not an escape)."""
    clean = text if is_inert(text) else "".join(ch if is_inert(ch) else "?" for ch in text)
    return clean[:MAX_LABEL_LEN]


def netns_inode(path: Path) -> int | None:
    """Inode of an nsfs file (a bind mount under /run/netns or /proc/<pid>/ns/net).

    lstat, never stat: a symlink planted under /run/netns must not lead the root-run
    profiler to some other file.
    """
    try:
        st = os.lstat(path)
    except OSError:
        return None
    if stat.S_ISLNK(st.st_mode):
        return None
    return st.st_ino


def proc_ns_inode(link: Path | str) -> int | None:
    # /proc/<pid>/ns/net is a magic link whose target reads "net:[<inode>]"; readlink
    # gives the inode without opening or following anything.
    try:
        target = os.readlink(link)
    except OSError:
        return None
    if target.startswith("net:[") and target.endswith("]") and target[5:-1].isdecimal():
        return int(target[5:-1])
    return None


class HostResolver:
    """The root network namespace is the node itself: PID 1's netns.

    Where PID 1's ns link is not readable (a sandbox, a PID namespace without hostPID),
    netprof's own netns stands in: it runs in the node's netns (hostNetwork) by design.
    """

    def __init__(self, root: Path = Path("/")):
        self._path = root / "proc/1/ns/net"
        self._inode = proc_ns_inode(self._path)
        if self._inode is None:
            self._path = root / "proc/self/ns/net"
            self._inode = proc_ns_inode(self._path)

    def lookup(self, inode: int) -> str | None:
        return HOST_LABEL if inode == self._inode else None

    def known(self) -> dict[int, str]:
        return {self._inode: HOST_LABEL} if self._inode is not None else {}

    def paths(self) -> dict[int, Path]:
        return {self._inode: self._path} if self._inode is not None else {}


@dataclass(frozen=True)
class PodIdentity:
    """A Kubernetes pod as the node knows it. `namespace`/`name` are empty when only the
    UID is known (a kubepods cgroup without a kubelet log directory to name it)."""
    namespace: str
    name: str
    uid: str = ""
    containers: tuple[str, ...] = ()
    source: str = ""  # which resolver: "containerd", "cri-o", "cgroup+pod-logs", …

    @property
    def label(self) -> str:
        if self.namespace and self.name:
            return sanitize_label(f"{self.namespace}/{self.name}")
        return sanitize_label(f"pod:{self.uid}")

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.namespace, self.name, self.uid)

    def to_json(self) -> dict:
        """`pods[].kubernetes` in the profile JSON. Every string was validated as a
        Kubernetes name or UID when read (never raw text from the node's files)."""
        return {"namespace": self.namespace, "name": self.name, "uid": self.uid,
                "containers": list(self.containers), "source": self.source}
