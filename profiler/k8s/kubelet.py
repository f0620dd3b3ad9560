"""Pod UID → namespace, name and container names, from what kubelet writes on the node.

Used where the runtime's state gave a UID only (the kubepods cgroup resolver). Two places,
best first:

1. **`/var/log/pods/<namespace>_<name>_<uid>/<container>/`** — the pod log directory kubelet
   creates for every pod and hands the runtime (`BuildPodLogsDirectory`; containerd stores
   it as `io.kubernetes.cri.sandbox-log-directory`). Namespaces and names cannot contain
   `_`, so the directory name splits without ambiguity, and the subdirectories are the
   container names. Written by kubelet only: the most trustworthy of the two.
2. **`/var/lib/kubelet/pods/<uid>/`** — kubelet's pod directory: `etc-hosts` (the pod's
   /etc/hosts: after kubelet's header `# Kubernetes-managed hosts file.` and the fixed
   localhost lines, a `<pod IP>\t<hostname>` line), `containers/<name>/` (termination
   logs), and the service-account volume
   `volumes/kubernetes.io~projected/kube-api-access-*/namespace`. The hostname is the pod's
   name unless the spec sets `hostname`, or the name is longer than 63 characters (kubelet
   truncates it); the file is writable by the pod's own root (it is its /etc/hosts). So it
   is a last resort, taken only with the namespace from the read-only service-account
   volume, and only the validated hostname is kept. Files named `token` are never opened.
"""
from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .base import MAX_CONTAINERS, PodIdentity, valid_container_name, valid_namespace, valid_pod_name, valid_uid
from .files import list_dir_in_root, read_capped

POD_LOGS_DIR = "var/log/pods"
KUBELET_PODS_DIR = "var/lib/kubelet/pods"
MANAGED_HOSTS_HEADER = "# Kubernetes-managed hosts file."
HOST_ALIASES_HEADER = "# Entries added by HostAliases."
MAX_ETC_HOSTS_BYTES = 64 << 10
MAX_NAMESPACE_FILE_BYTES = 256
MAX_LOG_DIRS = 8192
_LOG_DIR = re.compile(r"^(?P<namespace>[^_]+)_(?P<name>[^_]+)_(?P<uid>[^_]+)$")
# kubelet's fixed lines before the pod's own: localhost and the IPv6 well-known names.
_FIXED_HOSTS = frozenset({"localhost", "ip6-localhost", "ip6-loopback", "ip6-localnet",
                          "ip6-mcastprefix", "ip6-allnodes", "ip6-allrouters"})


def parse_log_dir_name(entry: str) -> tuple[str, str, str] | None:
    """`<namespace>_<name>_<uid>` → (namespace, name, uid), validated; else None."""
    match = _LOG_DIR.match(entry)
    if not match:
        return None
    namespace = valid_namespace(match["namespace"])
    name = valid_pod_name(match["name"])
    uid = valid_uid(match["uid"])
    if namespace is None or name is None or uid is None:
        return None
    return namespace, name, uid


def hostname_from_etc_hosts(text: str) -> str | None:
    """The pod's hostname in a kubelet-managed hosts file, or None.

    A hostNetwork pod's file (header `… (host network).`) is the node's /etc/hosts: no pod
    name in it, so only the exact pod-network header is accepted.
    """
    lines = text.splitlines()
    if not lines or lines[0].strip() != MANAGED_HOSTS_HEADER:
        return None
    for line in lines[1:]:
        if line.strip() == HOST_ALIASES_HEADER:
            break
        fields = line.split()
        if len(fields) < 2 or fields[0].startswith("#"):
            continue
        names = fields[1:]
        if any(name in _FIXED_HOSTS for name in names):
            continue
        # `<ip>\t<hostname>` or, with a subdomain, `<ip>\t<hostname>.<subdomain>.<ns>.svc.<domain>\t<hostname>`
        return valid_pod_name(names[-1])
    return None


@dataclass(frozen=True)
class _Cached:
    identity: PodIdentity | None
    at: float


class KubeletPods:
    """UID → PodIdentity from the node's pod log and kubelet directories, cached."""

    def __init__(self, node_root: Path = Path("/"), rescan_s: float = 2.0,
                 forget_after_s: float = 60.0, clock: Callable[[], float] = time.monotonic,
                 pod_logs_dir: str = POD_LOGS_DIR, kubelet_pods_dir: str = KUBELET_PODS_DIR):
        self._root = node_root
        self._rescan_s = rescan_s
        self._forget_after_s = forget_after_s
        self._clock = clock
        self._pod_logs_dir = pod_logs_dir
        self._kubelet_pods_dir = kubelet_pods_dir
        self._from_logs: dict[str, PodIdentity] = {}
        self._logs_scanned_at = float("-inf")
        self._from_kubelet: dict[str, _Cached] = {}

    def _scan_logs(self) -> None:
        self._logs_scanned_at = self._clock()
        found: dict[str, PodIdentity] = {}
        for entry in list_dir_in_root(self._root, self._pod_logs_dir)[:MAX_LOG_DIRS]:
            parsed = parse_log_dir_name(entry)
            if parsed is None:
                continue
            namespace, name, uid = parsed
            containers = _container_dirs(self._root, f"{self._pod_logs_dir}/{entry}")
            found[uid] = PodIdentity(namespace, name, uid, containers, "pod-logs")
        self._from_logs = found

    def identity(self, uid: str) -> PodIdentity | None:
        if valid_uid(uid) is None:
            return None
        if uid not in self._from_logs and self._clock() - self._logs_scanned_at >= self._rescan_s:
            self._scan_logs()
        if uid in self._from_logs:
            return self._from_logs[uid]
        cached = self._from_kubelet.get(uid)
        now = self._clock()
        if cached is None or now - cached.at >= (self._forget_after_s if cached.identity else self._rescan_s):
            cached = _Cached(self._from_kubelet_dir(uid), now)
            self._from_kubelet[uid] = cached
        return cached.identity

    def _from_kubelet_dir(self, uid: str) -> PodIdentity | None:
        pod_dir = f"{self._kubelet_pods_dir}/{uid}"
        hosts = read_capped(self._root, f"{pod_dir}/etc-hosts", MAX_ETC_HOSTS_BYTES)
        name = hostname_from_etc_hosts(hosts.decode("utf-8", errors="replace")) if hosts else None
        namespace = self._service_account_namespace(pod_dir)
        if name is None or namespace is None:
            return None
        return PodIdentity(namespace, name, uid, _container_dirs(self._root, f"{pod_dir}/containers"),
                           "kubelet-etc-hosts")

    def _service_account_namespace(self, pod_dir: str) -> str | None:
        # kube-api-access-<random> (projected, 1.22+) or <sa>-token-<random> (secret, older).
        for plugin in ("kubernetes.io~projected", "kubernetes.io~secret"):
            volumes = f"{pod_dir}/volumes/{plugin}"
            for volume in list_dir_in_root(self._root, volumes)[:MAX_CONTAINERS]:
                data = read_capped(self._root, f"{volumes}/{volume}/namespace", MAX_NAMESPACE_FILE_BYTES)
                if data is not None:
                    namespace = valid_namespace(data.decode("ascii", errors="replace").strip())
                    if namespace:
                        return namespace
        return None


def _container_dirs(root: Path, path: str) -> tuple[str, ...]:
    names = [name for name in list_dir_in_root(root, path) if valid_container_name(name)]
    return tuple(names[:MAX_CONTAINERS])
