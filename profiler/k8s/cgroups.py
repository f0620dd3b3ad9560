"""Kubepods cgroups (v1 and v2, systemd and cgroupfs drivers): netns inode → pod UID.

Works whatever the runtime, from two things the kernel gives for every process:
`/proc/<pid>/ns/net` (readlink → `net:[<inode>]`) and `/proc/<pid>/cgroup`, whose path
names the pod's cgroup. kubelet names it

| driver   | pod cgroup (under the kubepods root)                                     |
|----------|---------------------------------------------------------------------------|
| systemd  | `kubepods[-burstable|-besteffort]-pod<uid, - as _>.slice`                |
| cgroupfs | `kubepods[/burstable|/besteffort]/pod<uid>`                              |

in the unified line (`0::<path>`, cgroup v2) or in every controller's line (v1). The UID
then goes to `KubeletPods` for a name. Paths relative to a cgroup namespace
(`0::/../../kubepods-besteffort-pod….slice/…`, as seen from inside a container) still carry
the pod's component, and are accepted.

The *outermost* pod component counts: a privileged pod could create cgroups named like
another pod's below its own. Processes in the node's netns (hostNetwork pods, conmon) are
skipped: that netns is `host`. /proc is scanned in pid order and the first process with a
pod cgroup names the netns, which is the pod's pause process in practice (it starts first).
Reading another process's `ns/net` link needs CAP_SYS_PTRACE when that process holds
capabilities the reader lacks (ptrace access mode checks): without it this resolver finds
little, and the runtime resolvers (which need no ptrace) are the ones to rely on.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..netns_names import HostResolver
from .base import CachedScanResolver, PodIdentity, PodNetns, valid_uid
from .files import proc_netns_inode, read_regular_capped, resolve_in_root
from .kubelet import KubeletPods

MAX_CGROUP_FILE_BYTES = 64 << 10
_SYSTEMD_POD_SLICE = re.compile(r"^(?:.*-)?kubepods(?:-burstable|-besteffort)?-pod(?P<uid>[0-9a-f_]{32,36})\.slice$")
_CGROUPFS_POD = re.compile(r"^pod(?P<uid>[0-9a-f-]{32,36})$")
# The component a cgroupfs pod directory sits under; ".." when the kubepods root lies
# outside the reader's cgroup namespace.
_CGROUPFS_PARENTS = frozenset({"kubepods", "burstable", "besteffort", ".."})


def pod_uid_from_cgroup_path(path: str) -> str | None:
    """The pod UID in one cgroup path, from its outermost pod component, or None."""
    parts = path.split("/")
    for index, part in enumerate(parts):
        systemd = _SYSTEMD_POD_SLICE.match(part)
        if systemd:
            return valid_uid(systemd["uid"].replace("_", "-"))
        cgroupfs = _CGROUPFS_POD.match(part)
        if cgroupfs and index > 0 and (parts[index - 1] in _CGROUPFS_PARENTS or parts[index - 1].endswith("kubepods")):
            return valid_uid(cgroupfs["uid"])
    return None


def pod_uid_from_cgroup_file(text: str) -> str | None:
    """The pod UID of a process from its /proc/<pid>/cgroup text, or None.

    Every line that names a pod must name the same one (v1 lists one line per hierarchy);
    disagreeing lines mean someone arranged them, and the process names no pod.
    """
    uids = set()
    for line in text.splitlines():
        fields = line.split(":", 2)
        if len(fields) != 3:
            continue
        uid = pod_uid_from_cgroup_path(fields[2])
        if uid:
            uids.add(uid)
    return uids.pop() if len(uids) == 1 else None


class CgroupResolver(CachedScanResolver):
    """netns inode → pod, joining /proc/<pid>/ns/net with the kubepods cgroup of <pid>."""

    source = "cgroup"

    def __init__(self, root: Path = Path("/"), kubelet: KubeletPods | None = None,
                 rescan_s: float = 5.0, first_miss_rescan_s: float = 1.0, **cache):
        # A scan here reads every process's cgroup file: new inodes rescan less eagerly.
        super().__init__(rescan_s=rescan_s, first_miss_rescan_s=first_miss_rescan_s, **cache)
        self._root = root
        self._kubelet = kubelet if kubelet is not None else KubeletPods(root)
        self._host_netns = set(HostResolver(root).known())

    def _scan(self) -> list[PodNetns]:
        proc = resolve_in_root(self._root, "proc")
        if proc is None:
            return []
        try:
            pids = sorted(int(e.name) for e in os.scandir(proc)
                          if e.name.isdecimal() and e.is_dir(follow_symlinks=False))
        except OSError:
            return []
        uid_by_netns: dict[int, tuple[str, Path]] = {}
        # Strings, not Paths, for every process: a node runs hundreds, most in the host's
        # netns, and this runs every few seconds (pathlib cost more than the readlinks).
        prefix = f"{proc}/"
        for pid in pids:
            inode = proc_netns_inode(f"{prefix}{pid}/ns/net")
            if inode is None or inode in self._host_netns or inode in uid_by_netns:
                continue
            data = read_regular_capped(proc / str(pid) / "cgroup", MAX_CGROUP_FILE_BYTES)
            uid = pod_uid_from_cgroup_file(data.decode("utf-8", errors="replace")) if data else None
            if uid:
                uid_by_netns[inode] = (uid, proc / str(pid) / "ns/net")
        found = []
        for inode, (uid, link) in uid_by_netns.items():
            named = self._kubelet.identity(uid)
            pod = (PodIdentity(named.namespace, named.name, uid, named.containers, f"cgroup+{named.source}")
                   if named else PodIdentity("", "", uid, (), self.source))
            found.append(PodNetns(inode, pod, link))
        return found
