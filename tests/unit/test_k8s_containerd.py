"""containerd 1.7 and 2.x (k3s) task bundles → pods, on recorded trees and hostile ones."""
from __future__ import annotations

import json
import os
import shutil

import pytest

from profiler.k8s.containerd import ContainerdResolver
from tests.unit.test_k8s_trees import CONTAINERD_TASKS, HOST_NETNS, K8S, copy_tree, inode

WEB = "default/web-7d4b9c8f6d-x8k2p"
COREDNS = "kube-system/coredns-5dd5756b68-9kq4m"
WEB_NETNS = "run/netns/cni-3f9c1d2e-8a7b-4c5d-9e0f-1a2b3c4d5e6f"
TASKS = CONTAINERD_TASKS["containerd-1.7"]


def task_of(root, pod_name: str, kind: str = "sandbox", container: str | None = None):
    """The task directory of a pod's sandbox (or of one of its containers)."""
    tasks = root / CONTAINERD_TASKS[root.name]
    for task in sorted(tasks.iterdir()):
        if task.name.startswith(".") or not (task / "config.json").is_file():
            continue
        notes = json.loads((task / "config.json").read_text()).get("annotations", {})
        if (notes.get("io.kubernetes.cri.sandbox-name") == pod_name
                and notes.get("io.kubernetes.cri.container-type") == kind
                and (container is None or notes.get("io.kubernetes.cri.container-name") == container)):
            return task
    raise LookupError(pod_name)


def edit_spec(task, change) -> None:
    spec = json.loads((task / "config.json").read_text())
    change(spec)
    (task / "config.json").write_text(json.dumps(spec))


def test_containerd_17_names_pods_and_their_containers():
    root = K8S / "containerd-1.7"
    resolver = ContainerdResolver(root)
    web = inode(root / WEB_NETNS)
    known = resolver.known()
    assert known == {web: WEB, inode(root / "run/netns/cni-a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"): COREDNS}
    pod = resolver.identity(web)
    assert (pod.namespace, pod.name, pod.uid) == ("default", "web-7d4b9c8f6d-x8k2p", "6b7f3c2e-1a4d-4e8b-9c2f-0d5e6a7b8c9d")
    assert pod.containers == ("log-shipper", "nginx")
    assert pod.source == "containerd"
    assert resolver.paths()[web] == root / WEB_NETNS
    # kube-proxy is hostNetwork: its sandbox has no network namespace entry, and the node's
    # netns is `host`, not that pod's.
    assert HOST_NETNS not in known and resolver.lookup(HOST_NETNS) is None


def test_k3s_containerd_20_state_dir_and_bootstrap_json():
    root = K8S / "k3s-containerd-2.0"
    resolver = ContainerdResolver(root)
    api = inode(root / "run/netns/cni-5e6f7a8b-9c0d-4e1f-a2b3-c4d5e6f7a8b9")
    db = inode(root / "run/netns/cni-c4d5e6f7-a8b9-4c0d-8e1f-2a3b4c5d6e7f")
    assert resolver.known() == {api: "shop/api-6c9f8d7b5-q2w3e", db: "shop/db-0"}
    assert resolver.identity(db).containers == ("metrics", "postgres")
    # The `.<id>` bundle being deleted and the `ctr run` task (no CRI annotations) name nothing.
    assert "shop/gone-pod" not in resolver.known().values()


def test_sandbox_without_uid_annotation_still_names_the_pod(tmp_path):
    # containerd before 1.5 wrote no sandbox-uid.
    root = copy_tree("containerd-1.7", tmp_path)
    edit_spec(task_of(root, "web-7d4b9c8f6d-x8k2p"),
              lambda s: s["annotations"].pop("io.kubernetes.cri.sandbox-uid"))
    pod = ContainerdResolver(root).identity(inode(root / WEB_NETNS))
    assert pod.label == WEB and pod.uid == ""


def test_missing_netns_file_falls_back_to_the_sandbox_pid(tmp_path):
    root = copy_tree("containerd-1.7", tmp_path)
    (root / WEB_NETNS).unlink()
    resolver = ContainerdResolver(root)
    # init.pid 2101 → proc/2101/ns/net → net:[4026532401]
    assert resolver.lookup(4026532401) == WEB
    assert resolver.paths()[4026532401] == root / "proc/2101/ns/net"


def test_missing_sandbox_record_app_containers_stand_in(tmp_path):
    root = copy_tree("containerd-1.7", tmp_path)
    shutil.rmtree(task_of(root, "web-7d4b9c8f6d-x8k2p"))
    resolver = ContainerdResolver(root)
    # The containers' specs point at /proc/<pause pid>/ns/net and carry the pod's names.
    pod = resolver.identity(4026532401)
    assert pod.label == WEB and pod.containers == ("log-shipper", "nginx")


def test_nothing_left_to_locate_is_unknown(tmp_path):
    root = copy_tree("containerd-1.7", tmp_path)
    (root / WEB_NETNS).unlink()
    for pid in ("2101", "2111", "2112"):
        shutil.rmtree(root / "proc" / pid)
    assert WEB not in ContainerdResolver(root).known().values()
    assert COREDNS in ContainerdResolver(root).known().values()


def host_network_container(root):
    """kube-proxy's app container as containerd really records it for a hostNetwork pod: the
    sandbox spec has no network entry, yet the container's points at the pause process,
    /proc/<pause pid>/ns/net, which is the node's own netns (seen on containerd 1.6.20,
    1.7.24 and 2.1.9; the fixture records it so)."""
    task = task_of(root, "kube-proxy-h7x2z", "container")
    spec = json.loads((task / "config.json").read_text())
    assert {"type": "network", "path": "/proc/1501/ns/net"} in spec["linux"]["namespaces"]
    return task


def test_a_host_network_pods_container_does_not_claim_the_nodes_netns(tmp_path):
    root = copy_tree("containerd-1.7", tmp_path)
    host_network_container(root)
    resolver = ContainerdResolver(root)
    assert HOST_NETNS not in resolver.known()
    assert resolver.identity(HOST_NETNS) is None
    assert WEB in resolver.known().values() and COREDNS in resolver.known().values()


def test_a_container_pointing_into_the_nodes_netns_never_names_it(tmp_path):
    # Even with the sandbox's own record gone, the node's netns is `host`, no one pod's.
    root = copy_tree("containerd-1.7", tmp_path)
    host_network_container(root)
    shutil.rmtree(task_of(root, "kube-proxy-h7x2z"))
    assert ContainerdResolver(root).identity(HOST_NETNS) is None


def test_no_state_dir_is_no_pods(tmp_path):
    assert ContainerdResolver(tmp_path).known() == {}


# --------------------------------------------------------------------------- hostile trees


@pytest.fixture
def node(tmp_path):
    return copy_tree("containerd-1.7", tmp_path / "n")


def web_task(root):
    return task_of(root, "web-7d4b9c8f6d-x8k2p")


def test_config_json_link_out_of_root_is_not_read(node, tmp_path):
    task = web_task(node)
    outside = tmp_path / "outside.json"
    outside.write_text((task / "config.json").read_text())
    (task / "config.json").unlink()
    os.symlink(os.path.relpath(outside, task), task / "config.json")
    assert (task / "config.json").is_file()  # the OS would follow it out of the root
    for container in ("nginx", "log-shipper"):
        shutil.rmtree(task_of(node, "web-7d4b9c8f6d-x8k2p", "container", container))
    assert WEB not in ContainerdResolver(node).known().values()


def test_task_directory_link_out_of_root_is_not_followed(node, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    shutil.move(str(web_task(node)), elsewhere)
    os.symlink(str(elsewhere), node / TASKS / elsewhere.name.replace("elsewhere", "a" * 64))
    os.symlink("../../../../../../../../../../" + str(elsewhere).lstrip("/"), node / TASKS / ("b" * 64))
    known = ContainerdResolver(node).known()
    # Only the containers' records remain inside the root: they still name the pod, from
    # /proc/<pause>/ns/net, and the sandbox outside the root added nothing.
    assert known.get(4026532401) == WEB and inode(node / WEB_NETNS) not in known


def test_netns_path_escaping_root_is_not_used(node, tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("")

    def escape(spec):
        for namespace in spec["linux"]["namespaces"]:
            if namespace["type"] == "network":
                namespace["path"] = "/var/run/netns/../../../../../../../../.." + str(victim)
    edit_spec(web_task(node), escape)
    (web_task(node) / "init.pid").write_text("not a pid")
    assert inode(victim) not in ContainerdResolver(node).known()


def test_huge_binary_fifo_and_nested_specs_are_unknown(node):
    containers = [task for task in (node / TASKS).iterdir()
                  if json.loads((task / "config.json").read_text())["annotations"]
                  .get("io.kubernetes.cri.container-type") == "container"]
    with open(web_task(node) / "config.json", "wb") as f:
        f.truncate(10 * 1024**3)  # sparse: costs nothing on disk, would cost 10 GB to read
    (task_of(node, "coredns-5dd5756b68-9kq4m") / "config.json").write_bytes(b"\x00\xff" * 1000)
    (task_of(node, "kube-proxy-h7x2z") / "config.json").write_text("[" * 100_000)
    for task in containers:
        (task / "config.json").unlink()
        os.mkfifo(task / "config.json")
    assert ContainerdResolver(node).known() == {}


@pytest.mark.parametrize("field, value", [
    ("io.kubernetes.cri.sandbox-name", "web\x1b[31m-evil"),
    ("io.kubernetes.cri.sandbox-name", "web\nkube-system/coredns"),
    ("io.kubernetes.cri.sandbox-name", "../../etc"),
    ("io.kubernetes.cri.sandbox-name", "x" * 300),
    ("io.kubernetes.cri.sandbox-name", "Web"),
    ("io.kubernetes.cri.sandbox-namespace", "kube-system/fake"),
    ("io.kubernetes.cri.sandbox-namespace", ""),
    ("io.kubernetes.cri.sandbox-namespace", 42),
])
def test_names_kubernetes_would_not_admit_are_dropped(node, field, value):
    for kind, container in (("sandbox", None), ("container", "nginx"), ("container", "log-shipper")):
        edit_spec(task_of(node, "web-7d4b9c8f6d-x8k2p", kind, container), lambda s: s["annotations"].__setitem__(field, value))
    known = ContainerdResolver(node).known()
    assert set(known.values()) == {COREDNS}


def test_container_names_are_validated(node):
    edit_spec(task_of(node, "web-7d4b9c8f6d-x8k2p", "container", "nginx"),
              lambda s: s["annotations"].__setitem__("io.kubernetes.cri.container-name", "ng\x07inx"))
    assert ContainerdResolver(node).identity(inode(node / WEB_NETNS)).containers == ("log-shipper",)


@pytest.mark.parametrize("mangle", [
    lambda s: s.__setitem__("annotations", ["not", "a", "dict"]),
    lambda s: s.__setitem__("linux", "nope"),
    lambda s: s["linux"].__setitem__("namespaces", {"type": "network"}),
    lambda s: s["linux"]["namespaces"].append({"type": "network", "path": 7}),
])
def test_misshapen_specs_do_not_crash(node, mangle):
    edit_spec(web_task(node), mangle)
    ContainerdResolver(node).known()


def test_two_sandboxes_claiming_one_netns_name_neither(node):
    def same_netns(spec):
        for namespace in spec["linux"]["namespaces"]:
            if namespace["type"] == "network":
                namespace["path"] = "/" + WEB_NETNS
    edit_spec(task_of(node, "coredns-5dd5756b68-9kq4m"), same_netns)
    assert inode(node / WEB_NETNS) not in ContainerdResolver(node).known()
