"""containerd (CRI plugin, 1.7 and 2.x): pod names from the runtime v2 task state.

For every running task the runtime v2 shim keeps a bundle directory under
`<state>/io.containerd.runtime.v2.task/k8s.io/<id>/` (state = /run/containerd; k3s and
RKE2 use /run/k3s/containerd): `config.json` (the OCI spec), `init.pid`, plus files we do
not read (`address` or, in 2.x, `bootstrap.json`; `log`, `options.json`, `rootfs/`, and
`work`, a symlink into /var/lib/containerd that is never followed). A bundle being deleted
is first renamed to `.<id>`: such names are skipped.

The CRI plugin annotates every spec (pkg/cri/annotations, internal/cri/annotations in 2.x):
`io.kubernetes.cri.container-type` (`sandbox` | `container`), `…sandbox-id`,
`…sandbox-name`, `…sandbox-namespace`, `…sandbox-uid` (1.5+; may be absent before), and on
app containers `…container-name`. The sandbox's netns path is `/var/run/netns/cni-<uuid>`
(or `<state>/…/netns` with `netns_mounts_under_state_dir`); app containers point at
`/proc/<pause pid>/ns/net`.
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path

from .base import CachedScanResolver, PodIdentity, PodNetns, valid_container_name, valid_namespace, valid_pod_name, valid_uid
from .bundles import Bundle, SpecCache, pods_from_bundles
from .files import list_dir_in_root

STATE_DIRS = (
    "run/containerd/io.containerd.runtime.v2.task/k8s.io",
    "run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io",
)
CONTAINER_TYPE = "io.kubernetes.cri.container-type"
SANDBOX_ID = "io.kubernetes.cri.sandbox-id"
SANDBOX_NAME = "io.kubernetes.cri.sandbox-name"
SANDBOX_NAMESPACE = "io.kubernetes.cri.sandbox-namespace"
SANDBOX_UID = "io.kubernetes.cri.sandbox-uid"
CONTAINER_NAME = "io.kubernetes.cri.container-name"

# containerd's identifiers.Validate: alphanumerics joined by single . _ -, at most 76 chars.
TASK_ID = re.compile(r"^[A-Za-z0-9]+(?:[._-][A-Za-z0-9]+)*$")
MAX_TASK_ID_LEN = 76
MAX_TASKS = 4096  # per state dir; kubelet's default is 110 pods a node


def read_bundle(specs: SpecCache, node_root: Path, task_dir: str, task_id: str) -> Bundle | None:
    spec = specs.load(node_root, f"{task_dir}/config.json")
    if spec is None:
        return None
    notes = spec.annotations
    kind = notes.get(CONTAINER_TYPE)
    if kind not in ("sandbox", "container"):
        return None  # not made by the CRI plugin (ctr, nerdctl, buildkit …)
    is_sandbox = kind == "sandbox"
    namespace = valid_namespace(notes.get(SANDBOX_NAMESPACE))
    name = valid_pod_name(notes.get(SANDBOX_NAME))
    if namespace is None or name is None:
        return None
    sandbox_id = task_id if is_sandbox else notes.get(SANDBOX_ID, "")
    return Bundle(
        is_sandbox=is_sandbox,
        sandbox_id=sandbox_id,
        pod=PodIdentity(namespace, name, valid_uid(notes.get(SANDBOX_UID)) or ""),
        container_name=None if is_sandbox else valid_container_name(notes.get(CONTAINER_NAME)),
        network_path=spec.network_path,
        pid_file=f"{task_dir}/init.pid",
    )


class ContainerdResolver(CachedScanResolver):
    """netns inode → `namespace/name` from containerd's task bundles."""

    source = "containerd"

    def __init__(self, root: Path = Path("/"), node_root: Path | None = None,
                 state_dirs: Sequence[str] = STATE_DIRS, **cache):
        """root: where /proc is. node_root: where the node's /run is (default: root);
        `kubectl debug node/…` mounts it at /host."""
        super().__init__(**cache)
        self._root = root
        self._node_root = node_root if node_root is not None else root
        self._state_dirs = tuple(state_dirs)
        self._specs = SpecCache()

    def _bundles(self) -> Iterable[Bundle]:
        for state_dir in self._state_dirs:
            for task_id in list_dir_in_root(self._node_root, state_dir)[:MAX_TASKS]:
                if len(task_id) > MAX_TASK_ID_LEN or not TASK_ID.match(task_id):
                    continue
                bundle = read_bundle(self._specs, self._node_root, f"{state_dir}/{task_id}", task_id)
                if bundle is not None:
                    yield bundle

    def _scan(self) -> list[PodNetns]:
        found = pods_from_bundles(self._bundles(), self._root, self._node_root, self.source)
        self._specs.prune()
        return found
