"""CRI-O's run root (containers/storage userdata) → pods, on a recorded tree and hostile ones."""
from __future__ import annotations

import json
import os
import shutil

from profiler.k8s.crio import CrioResolver
from tests.unit.test_k8s_trees import CRIO_STORE, HOST_NETNS, K8S, copy_tree, inode

LEDGER = "payments/ledger-5f6d7c8b9-k4l5m"
DNS = "openshift-dns/dns-default-7x8y9"
LEDGER_NETNS = "run/netns/8d7c6b5a-4938-4271-a605-f4e3d2c1b0a9"


def userdata_of(root, pod_name: str, kind: str = "sandbox"):
    for entry in sorted((root / CRIO_STORE).iterdir()):
        notes = json.loads((entry / "userdata/config.json").read_text()).get("annotations", {})
        if notes.get("io.kubernetes.pod.name") == pod_name and notes.get("io.kubernetes.cri-o.ContainerType") == kind:
            yield entry / "userdata"


def test_crio_names_pods_containers_and_skips_host_network():
    root = K8S / "crio-1.30"
    resolver = CrioResolver(root)
    ledger = inode(root / LEDGER_NETNS)
    dns = inode(root / "run/netns/7c6b5a49-3827-4160-b5f4-e3d2c1b0a998")
    assert resolver.known() == {ledger: LEDGER, dns: DNS}
    pod = resolver.identity(dns)
    assert pod.uid == "4d5e6f7a-8b9c-4d0e-9f1a-2b3c4d5e6f7a"
    assert pod.containers == ("dns", "kube-rbac-proxy")
    assert pod.source == "cri-o"
    assert resolver.paths()[ledger] == root / LEDGER_NETNS
    # openshift-sdn is hostNetwork; the podman container in the same storage is no pod.
    assert HOST_NETNS not in resolver.known()


def test_crio_own_annotations_stand_in_for_missing_kubelet_labels(tmp_path):
    root = copy_tree("crio-1.30", tmp_path)
    for userdata in [*userdata_of(root, "ledger-5f6d7c8b9-k4l5m"), *userdata_of(root, "ledger-5f6d7c8b9-k4l5m", "container")]:
        spec = json.loads((userdata / "config.json").read_text())
        for key in ("io.kubernetes.pod.name", "io.kubernetes.pod.namespace"):
            spec["annotations"].pop(key)
        (userdata / "config.json").write_text(json.dumps(spec))
    assert CrioResolver(root).lookup(inode(root / LEDGER_NETNS)) == LEDGER


def test_unpinned_netns_falls_back_to_conmon_pidfile(tmp_path):
    root = copy_tree("crio-1.30", tmp_path)
    (root / LEDGER_NETNS).unlink()
    resolver = CrioResolver(root)
    assert resolver.lookup(4026532701) == LEDGER  # pidfile 4101 → proc/4101/ns/net
    assert resolver.paths()[4026532701] == root / "proc/4101/ns/net"


def test_missing_sandbox_containers_stand_in(tmp_path):
    root = copy_tree("crio-1.30", tmp_path)
    for userdata in userdata_of(root, "dns-default-7x8y9"):
        shutil.rmtree(userdata.parent)
    dns = inode(root / "run/netns/7c6b5a49-3827-4160-b5f4-e3d2c1b0a998")
    pod = CrioResolver(root).identity(dns)
    assert pod.label == DNS and pod.containers == ("dns", "kube-rbac-proxy")


def test_hostile_userdata(tmp_path):
    root = copy_tree("crio-1.30", tmp_path / "n")
    ledger_sandbox = next(userdata_of(root, "ledger-5f6d7c8b9-k4l5m"))
    ledger_containers = list(userdata_of(root, "ledger-5f6d7c8b9-k4l5m", "container"))
    dns_sandbox = next(userdata_of(root, "dns-default-7x8y9"))
    dns_containers = list(userdata_of(root, "dns-default-7x8y9", "container"))
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.move(str(ledger_sandbox / "config.json"), outside / "config.json")
    os.symlink(os.path.relpath(outside / "config.json", ledger_sandbox), ledger_sandbox / "config.json")
    for userdata in ledger_containers:
        with open(userdata / "config.json", "wb") as f:
            f.truncate(10 * 1024**3)
    spec = json.loads((dns_sandbox / "config.json").read_text())
    spec["annotations"]["io.kubernetes.pod.name"] = "dns\u202edefault"  # bidi override
    (dns_sandbox / "config.json").write_text(json.dumps(spec))
    for userdata in dns_containers:
        (userdata / "config.json").write_text('{"annotations": {"io.kubernetes.cri-o.ContainerType": ')
    # a storage directory that is a link out of the root
    os.symlink(os.path.relpath(outside, root / "run/containers/storage"), root / "run/containers/storage/vfs-containers")
    assert CrioResolver(root).known() == {}


def test_no_run_root_is_no_pods(tmp_path):
    assert CrioResolver(tmp_path).known() == {}
