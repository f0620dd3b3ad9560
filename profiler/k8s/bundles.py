"""OCI runtime bundles (the `config.json` a CRI runtime hands runc) → pods and their netns.

containerd and CRI-O both keep, for every running pod sandbox ("pause" container) and app
container, an OCI runtime spec whose annotations say which pod it belongs to, and whose
`linux.namespaces` entry of type `network` says where the netns is:

- the sandbox: a path to the netns the CNI plugin wired (`/var/run/netns/cni-<uuid>` for
  containerd, `/var/run/netns/<uuid>` for CRI-O), or no path when the runtime let runc make
  a fresh one (then the sandbox's pid file leads to `/proc/<pid>/ns/net`), or no network
  entry at all for a hostNetwork pod (which shares the node's netns: that one is `host`);
- an app container: `/proc/<sandbox pid>/ns/net` (containerd) or the sandbox's path (CRI-O).
  containerd writes that path for a hostNetwork pod's containers too, where the pause
  process lives in the node's netns: so a container never speaks for a hostNetwork sandbox,
  and nothing here ever names the node's own netns (it is `host`, no one pod's).

The runtime modules turn annotations into `Bundle`s; `pods_from_bundles` joins them. Only the
validated names, UID and the netns inode are kept. A spec is parsed once per file version
(`SpecCache`): rescans only list directories and stat files.
"""
from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..netns_names import HostResolver, netns_inode
from .base import MAX_CONTAINERS, PodIdentity, PodNetns
from .files import decode_json, proc_netns_inode, read_pid_file, read_regular_capped, resolve_in_root

# A real pod's spec is 5-50 kB; one with thousands of service environment variables stays
# far below this. Anything larger is not read at all.
MAX_SPEC_BYTES = 4 << 20
_PROC_NETNS = re.compile(r"^/proc/([0-9]{1,10})/ns/net$")


@dataclass(frozen=True)
class OciSpec:
    annotations: Mapping[str, str]
    # The network namespace entry: None = no entry (the host's netns), "" = a new netns
    # without a path, else the path the runtime gave.
    network_path: str | None


@dataclass(frozen=True)
class Bundle:
    """One sandbox or container record, reduced to what pod resolution needs."""
    is_sandbox: bool
    sandbox_id: str
    pod: PodIdentity            # without containers; validated names
    container_name: str | None  # app containers only
    network_path: str | None    # as in OciSpec
    pid_file: str | None        # where the task's pid is written (init.pid, pidfile), in node_root


def parse_spec(document: Any) -> OciSpec | None:
    """The parts of an OCI runtime spec we use; None if it is not shaped like one."""
    if not isinstance(document, dict):
        return None
    raw_annotations = document.get("annotations")
    annotations = ({k: v for k, v in raw_annotations.items() if isinstance(k, str) and isinstance(v, str)}
                   if isinstance(raw_annotations, dict) else {})
    network_path: str | None = None
    linux = document.get("linux")
    namespaces = linux.get("namespaces") if isinstance(linux, dict) else None
    if isinstance(namespaces, list):
        for namespace in namespaces:
            if isinstance(namespace, dict) and namespace.get("type") == "network":
                path = namespace.get("path", "")
                network_path = path if isinstance(path, str) else ""
                break
    return OciSpec(annotations, network_path)


class SpecCache:
    """Parsed specs keyed by file identity, so an unchanged `config.json` is parsed once."""

    def __init__(self) -> None:
        self._specs: dict[Path, tuple[tuple[int, int, int, int], OciSpec | None]] = {}
        self._used: set[Path] = set()

    def load(self, root: Path, path: str) -> OciSpec | None:
        resolved = resolve_in_root(root, path)
        if resolved is None:
            return None
        try:
            st = os.lstat(resolved)
        except OSError:
            return None
        stamp = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        self._used.add(resolved)
        cached = self._specs.get(resolved)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        data = read_regular_capped(resolved, MAX_SPEC_BYTES)
        spec = parse_spec(decode_json(data)) if data is not None else None
        self._specs[resolved] = (stamp, spec)
        return spec

    def prune(self) -> None:
        """Forget specs not loaded since the last prune (their containers are gone)."""
        self._specs = {path: entry for path, entry in self._specs.items() if path in self._used}
        self._used = set()


def locate_netns(network_path: str | None, pid_file: str | None, root: Path,
                 node_root: Path) -> tuple[int, Path] | None:
    """(inode, path to enter) of a bundle's netns, or None (host netns, or not found).

    A `/proc/<pid>/ns/net` path is read with readlink in `root`'s /proc; any other path is
    resolved inside `node_root` and lstat'ed (a bind-mounted nsfs file's inode is the netns
    inode). Where the path is missing or unreadable, the task's own pid stands in (read only
    then: most scans never open a pid file).
    """
    if network_path is None:
        return None
    if network_path:
        proc = _PROC_NETNS.match(network_path)
        if proc:
            link = root / "proc" / proc.group(1) / "ns/net"
            inode = proc_netns_inode(link)
            if inode is not None:
                return inode, link
        else:
            resolved = resolve_in_root(node_root, network_path)
            inode = netns_inode(resolved) if resolved is not None else None
            if resolved is not None and inode is not None:
                return inode, resolved
    pid = read_pid_file(node_root, pid_file) if pid_file else None
    if pid is not None:
        link = root / "proc" / str(pid) / "ns/net"
        inode = proc_netns_inode(link)
        if inode is not None:
            return inode, link
    return None


def pods_from_bundles(bundles: Iterable[Bundle], root: Path, node_root: Path,
                      source: str) -> list[PodNetns]:
    """Sandboxes give the pod and its netns; app containers add their names, and stand in
    for a sandbox whose own record is missing or unreadable (never for a hostNetwork one)."""
    bundles = list(bundles)
    containers: dict[str, list[str]] = {}
    host_network_sandboxes: set[str] = set()
    for bundle in bundles:
        if not bundle.is_sandbox and bundle.container_name:
            names = containers.setdefault(bundle.sandbox_id, [])
            if bundle.container_name not in names and len(names) < MAX_CONTAINERS:
                names.append(bundle.container_name)
        if bundle.is_sandbox and bundle.network_path is None:
            host_network_sandboxes.add(bundle.sandbox_id)
    node_netns = set(HostResolver(root).known())
    found: list[PodNetns] = []
    located_sandboxes: set[str] = set()
    # Sandboxes first: a container stands in only for a sandbox that could not be located.
    for bundle in sorted(bundles, key=lambda b: not b.is_sandbox):
        if not bundle.is_sandbox and (bundle.sandbox_id in located_sandboxes
                                      or bundle.sandbox_id in host_network_sandboxes):
            continue
        where = locate_netns(bundle.network_path, bundle.pid_file, root, node_root)
        if where is None or where[0] in node_netns:
            continue
        if bundle.is_sandbox:
            located_sandboxes.add(bundle.sandbox_id)
        inode, path = where
        pod = PodIdentity(bundle.pod.namespace, bundle.pod.name, bundle.pod.uid,
                          tuple(sorted(containers.get(bundle.sandbox_id, ()))), source)
        found.append(PodNetns(inode, pod, path, from_sandbox=bundle.is_sandbox))
    return found
