"""The recorded node trees under tests/fixtures/k8s, and helpers the k8s tests share.

In a fixture tree a plain file stands in for a netns bind mount (/run/netns/cni-…): both
have an inode, and lstat gives it. /proc/<pid>/ns/net links carry fixed inode numbers
(`net:[4026532401]`), so in the stored trees the two disagree; `consistent_copy` rewrites
each pause process's link to the inode of its pod's netns file, as on a real node.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

K8S = Path(__file__).resolve().parent.parent / "fixtures" / "k8s"
HOST_NETNS = 4026531840

CONTAINERD_TASKS = {
    "containerd-1.7": "run/containerd/io.containerd.runtime.v2.task/k8s.io",
    "k3s-containerd-2.0": "run/k3s/containerd/io.containerd.runtime.v2.task/k8s.io",
}
CRIO_STORE = "run/containers/storage/overlay-containers"


def copy_tree(name: str, tmp_path: Path) -> Path:
    root = tmp_path / name
    shutil.copytree(K8S / name, root, symlinks=True)
    return root


def inode(path: Path) -> int:
    return os.lstat(path).st_ino


def specs(root: Path) -> dict[str, dict]:
    """task/container id → parsed config.json, for every runtime record in a tree."""
    found = {}
    for tasks in list(CONTAINERD_TASKS.values()) + [CRIO_STORE]:
        base = root / tasks
        if not base.is_dir():
            continue
        for entry in base.iterdir():
            if entry.name.startswith("."):
                continue  # a bundle containerd is deleting (renamed to .<id> first)
            config = entry / "config.json" if (entry / "config.json").exists() else entry / "userdata/config.json"
            if config.is_file() and not config.is_symlink():
                found[entry.name] = json.loads(config.read_text())
    return found


def netns_path_of(spec: dict) -> str | None:
    for namespace in spec.get("linux", {}).get("namespaces", []):
        if namespace.get("type") == "network":
            return namespace.get("path", "")
    return None


def pid_of(root: Path, task_id: str) -> int:
    for candidate in (root / CONTAINERD_TASKS.get(root.name, "-") / task_id / "init.pid",
                      root / CRIO_STORE / task_id / "userdata/pidfile"):
        if candidate.is_file():
            return int(candidate.read_text())
    raise KeyError(task_id)


def consistent_copy(name: str, tmp_path: Path) -> Path:
    """A copy whose /proc links name the same inodes as the netns files, as on a node."""
    root = copy_tree(name, tmp_path)
    sandbox_key = {"io.kubernetes.cri.container-type": "sandbox", "io.kubernetes.cri-o.ContainerType": "sandbox"}
    for task_id, spec in specs(root).items():
        notes = spec.get("annotations", {})
        if not any(notes.get(k) == v for k, v in sandbox_key.items()):
            continue
        path = netns_path_of(spec)
        if not path:
            continue
        netns_file = root / path.lstrip("/").replace("var/run/", "run/", 1)
        pause = pid_of(root, task_id)
        real_inode = inode(netns_file)
        for proc in (root / "proc").iterdir():
            link = proc / "ns/net"
            if link.is_symlink() and os.readlink(link) == os.readlink(root / f"proc/{pause}/ns/net"):
                link.unlink()
                os.symlink(f"net:[{real_inode}]", link)
    return root


@pytest.mark.parametrize("name", sorted(CONTAINERD_TASKS))
def test_containerd_trees_have_the_runtime_v2_layout(name):
    root = K8S / name
    tasks = root / CONTAINERD_TASKS[name]
    sandboxes = [s for s in specs(root).values() if s.get("annotations", {}).get("io.kubernetes.cri.container-type") == "sandbox"]
    assert sandboxes
    for spec in sandboxes:
        notes = spec["annotations"]
        for key in ("io.kubernetes.cri.sandbox-name", "io.kubernetes.cri.sandbox-namespace",
                    "io.kubernetes.cri.sandbox-uid", "io.kubernetes.cri.sandbox-id"):
            assert notes[key], key
    for task in tasks.iterdir():
        if task.name.startswith("."):
            continue
        assert (task / "config.json").is_file()
        # The work link points into /var/lib: it must never be followed, and here leads nowhere.
        if (task / "work").is_symlink():
            assert os.readlink(task / "work").startswith("/var/lib/")
    # 1.7 shims write `address`, 2.x shims `bootstrap.json`.
    marker = "address" if name == "containerd-1.7" else "bootstrap.json"
    assert all((t / marker).is_file() for t in tasks.iterdir() if (t / "init.pid").is_file())


def test_crio_tree_has_the_storage_run_root_layout():
    sandboxes = [s for s in specs(K8S / "crio-1.30").values()
                 if s.get("annotations", {}).get("io.kubernetes.cri-o.ContainerType") == "sandbox"]
    assert len(sandboxes) == 3
    for spec in sandboxes:
        notes = spec["annotations"]
        assert notes["io.kubernetes.pod.name"] == notes["io.kubernetes.cri-o.KubeName"]
        assert notes["io.kubernetes.pod.namespace"] == notes["io.kubernetes.cri-o.Namespace"]
        assert notes["io.kubernetes.container.name"] == "POD"


def test_consistent_copy_aligns_proc_links_with_netns_files(tmp_path):
    root = consistent_copy("containerd-1.7", tmp_path)
    netns = inode(root / "run/netns/cni-3f9c1d2e-8a7b-4c5d-9e0f-1a2b3c4d5e6f")
    assert os.readlink(root / "proc/2101/ns/net") == f"net:[{netns}]"
    assert os.readlink(root / "proc/2111/ns/net") == f"net:[{netns}]"  # the pod's nginx
    assert os.readlink(root / "proc/1501/ns/net") == f"net:[{HOST_NETNS}]"  # hostNetwork kube-proxy
