"""CRI-O: pod names from the containers/storage run root.

CRI-O keeps every running sandbox's and container's OCI spec in
`/var/run/containers/storage/<driver>-containers/<id>/userdata/config.json` (the run root;
the driver is `overlay` almost everywhere), beside conmon's `pidfile`. Annotations
(cri-o pkg/annotations): `io.kubernetes.cri-o.ContainerType` (`sandbox` | `container`),
`io.kubernetes.cri-o.SandboxID`, `io.kubernetes.cri-o.KubeName` (pod name),
`io.kubernetes.cri-o.Namespace`, `io.kubernetes.cri-o.HostNetwork`; and the labels kubelet
put on the sandbox and containers, copied into the annotations: `io.kubernetes.pod.name`,
`io.kubernetes.pod.namespace`, `io.kubernetes.pod.uid`, `io.kubernetes.container.name`
(`POD` on the sandbox). The netns is pinned by `pinns` at `/var/run/netns/<uuid>`; both the
sandbox's and the containers' specs carry that path.
"""
from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from .base import CachedScanResolver, PodIdentity, PodNetns, valid_container_name, valid_namespace, valid_pod_name, valid_uid
from .bundles import Bundle, SpecCache, pods_from_bundles
from .containerd import MAX_TASK_ID_LEN, MAX_TASKS, TASK_ID
from .files import list_dir_in_root

RUN_ROOT = "run/containers/storage"
CONTAINER_TYPE = "io.kubernetes.cri-o.ContainerType"
SANDBOX_ID = "io.kubernetes.cri-o.SandboxID"
KUBE_NAME = "io.kubernetes.cri-o.KubeName"
CRIO_NAMESPACE = "io.kubernetes.cri-o.Namespace"
POD_NAME = "io.kubernetes.pod.name"
POD_NAMESPACE = "io.kubernetes.pod.namespace"
POD_UID = "io.kubernetes.pod.uid"
CONTAINER_NAME = "io.kubernetes.container.name"


def read_bundle(specs: SpecCache, node_root: Path, userdata: str, container_id: str) -> Bundle | None:
    spec = specs.load(node_root, f"{userdata}/config.json")
    if spec is None:
        return None
    notes = spec.annotations
    kind = notes.get(CONTAINER_TYPE)
    if kind not in ("sandbox", "container"):
        return None  # a podman/buildah container in the same storage
    is_sandbox = kind == "sandbox"
    # kubelet's labels first; CRI-O's own copies where an old kubelet set no labels.
    namespace = valid_namespace(notes.get(POD_NAMESPACE) or notes.get(CRIO_NAMESPACE))
    name = valid_pod_name(notes.get(POD_NAME) or notes.get(KUBE_NAME))
    if namespace is None or name is None:
        return None
    return Bundle(
        is_sandbox=is_sandbox,
        sandbox_id=container_id if is_sandbox else notes.get(SANDBOX_ID, ""),
        pod=PodIdentity(namespace, name, valid_uid(notes.get(POD_UID)) or ""),
        container_name=None if is_sandbox else valid_container_name(notes.get(CONTAINER_NAME)),
        network_path=spec.network_path,
        pid_file=f"{userdata}/pidfile",
    )


class CrioResolver(CachedScanResolver):
    """netns inode → `namespace/name` from CRI-O's run root."""

    source = "cri-o"

    def __init__(self, root: Path = Path("/"), node_root: Path | None = None,
                 run_root: str = RUN_ROOT, **cache):
        super().__init__(**cache)
        self._root = root
        self._node_root = node_root if node_root is not None else root
        self._run_root = run_root
        self._specs = SpecCache()

    def _bundles(self) -> Iterable[Bundle]:
        for store in list_dir_in_root(self._node_root, self._run_root):
            if not store.endswith("-containers"):
                continue  # overlay-containers, vfs-containers, btrfs-containers …
            for container_id in list_dir_in_root(self._node_root, f"{self._run_root}/{store}")[:MAX_TASKS]:
                if len(container_id) > MAX_TASK_ID_LEN or not TASK_ID.match(container_id):
                    continue
                userdata = f"{self._run_root}/{store}/{container_id}/userdata"
                bundle = read_bundle(self._specs, self._node_root, userdata, container_id)
                if bundle is not None:
                    yield bundle

    def _scan(self) -> list[PodNetns]:
        found = pods_from_bundles(self._bundles(), self._root, self._node_root, self.source)
        self._specs.prune()
        return found
