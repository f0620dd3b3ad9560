"""kubepods cgroups (v1/v2, systemd/cgroupfs) → pod UID, joined with /proc/<pid>/ns/net."""
from __future__ import annotations

import os
import shutil

import pytest

from profiler.k8s.cgroups import CgroupResolver, pod_uid_from_cgroup_file, pod_uid_from_cgroup_path
from profiler.k8s.kubelet import KubeletPods
from tests.unit.test_k8s_trees import HOST_NETNS, K8S, copy_tree

UID = "6b7f3c2e-1a4d-4e8b-9c2f-0d5e6a7b8c9d"
STATIC_UID = "2d3c4b5a69788796a5b4c3d2e1f00f1e"


@pytest.mark.parametrize("recorded, uid", [
    ("v2-systemd-burstable.txt", UID),
    ("v2-systemd-guaranteed.txt", UID),
    ("v2-cgroupfs-besteffort.txt", UID),
    ("v2-cgroupfs-guaranteed.txt", UID),
    ("v1-systemd-besteffort.txt", UID),
    ("v1-cgroupfs-burstable.txt", UID),
    ("v2-crio-systemd.txt", UID),
    ("v2-systemd-cgroupns-relative.txt", UID),
    ("v2-cgroupfs-cgroupns-relative.txt", UID),
    ("v2-kind-nested.txt", UID),
    ("v2-systemd-static-pod.txt", STATIC_UID),
    ("v2-host-containerd.txt", None),
    ("v1-host-sshd.txt", None),
    ("v2-crio-conmon-system.txt", None),
])
def test_recorded_cgroup_files(recorded, uid):
    assert pod_uid_from_cgroup_file((K8S / "cgroup" / recorded).read_text()) == uid


@pytest.mark.parametrize("path", [
    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podNOTAUID.slice/x.scope",
    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod6b7f3c2e_1a4d_4e8b.slice",
    "/user.slice/pod6b7f3c2e-1a4d-4e8b-9c2f-0d5e6a7b8c9d/x",       # not under kubepods
    "/kubepods/burstable/pod6B7F3C2E-1A4D-4E8B-9C2F-0D5E6A7B8C9D/x",  # kubelet writes lowercase
    "/kubepods/burstable/pod6b7f3c2e-1a4d-4e8b-9c2f-0d5e6a7b8c9d\x1b[0m/x",
    "",
])
def test_paths_that_name_no_pod(path):
    assert pod_uid_from_cgroup_path(path) is None


def test_the_outermost_pod_component_counts():
    other = "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
    nested = (f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID.replace('-', '_')}.slice/"
              f"cri-containerd-abc.scope/kubepods-besteffort-pod{other.replace('-', '_')}.slice")
    assert pod_uid_from_cgroup_path(nested) == UID


def test_v1_lines_naming_different_pods_name_none():
    other = "0c1d2e3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f"
    text = f"12:pids:/kubepods/besteffort/pod{UID}/x\n11:memory:/kubepods/besteffort/pod{other}/x\n0::/\n"
    assert pod_uid_from_cgroup_file(text) is None
    assert pod_uid_from_cgroup_file("garbage\n\x00\x01::\n::::\n") is None


@pytest.mark.parametrize("tree, expected", [
    ("containerd-1.7", {4026532401: "default/web-7d4b9c8f6d-x8k2p", 4026532402: "kube-system/coredns-5dd5756b68-9kq4m"}),
    ("k3s-containerd-2.0", {4026532601: "shop/api-6c9f8d7b5-q2w3e", 4026532602: "shop/db-0"}),
    ("crio-1.30", {4026532701: "payments/ledger-5f6d7c8b9-k4l5m", 4026532702: "openshift-dns/dns-default-7x8y9"}),
])
def test_cgroup_resolver_on_runtime_nodes(tree, expected):
    # hostNetwork pods (kube-proxy, openshift-sdn) and conmon in the pod's slice live in
    # the node's netns: never claimed.
    resolver = CgroupResolver(K8S / tree)
    assert resolver.known() == expected
    assert HOST_NETNS not in resolver.known()


def test_cgroup_resolver_with_kubelet_dirs_only():
    root = K8S / "kubelet-cgroupfs-v1"
    resolver = CgroupResolver(root)
    assert resolver.known() == {
        4026532801: "team-a/frontend-7f8d9c-2x4v6",   # /var/log/pods
        4026532802: "team-b/worker-0",                # etc-hosts + service-account namespace
        4026532803: "team-b/cache-5c6d7e8f9-abcde",   # etc-hosts with a subdomain line
        4026532805: "pod:0d1e2f3a-4b5c-4d6e-9f7a-8b9c0d1e2f3a",  # nothing names it: UID
    }
    assert resolver.identity(4026532801).source == "cgroup+pod-logs"
    assert resolver.identity(4026532802).source == "cgroup+kubelet-etc-hosts"
    assert resolver.identity(4026532802).containers == ("istio-proxy", "worker")
    assert resolver.paths()[4026532801] == root / "proc/5101/ns/net"


def test_first_process_of_a_netns_names_it(tmp_path):
    root = copy_tree("containerd-1.7", tmp_path)
    # A process of coredns's pod that entered web's netns (nsenter from a debug pod): the
    # pause process, first in pid order, still names the netns.
    intruder = root / "proc/9999"
    shutil.copytree(root / "proc/1801", intruder, symlinks=True)
    (intruder / "ns/net").unlink()
    os.symlink("net:[4026532401]", intruder / "ns/net")
    assert CgroupResolver(root).lookup(4026532401) == "default/web-7d4b9c8f6d-x8k2p"


def test_hostile_proc_entries(tmp_path):
    root = copy_tree("containerd-1.7", tmp_path / "n")
    outside = tmp_path / "outside"
    shutil.copytree(root / "proc/2101", outside, symlinks=True)
    shutil.rmtree(root / "proc/2101")
    os.symlink(os.path.relpath(outside, root / "proc"), root / "proc/2101")  # pid dir is a link
    for pid in ("2111", "2112"):
        (root / f"proc/{pid}/cgroup").unlink()
        os.symlink(os.path.relpath(outside / "cgroup", root / f"proc/{pid}"), root / f"proc/{pid}/cgroup")
    os.symlink("net:[not-a-number]", root / "proc/1801/ns/net.tmp")
    os.replace(root / "proc/1801/ns/net.tmp", root / "proc/1801/ns/net")
    with open(root / "proc/1811/cgroup", "wb") as f:
        f.truncate(1 << 30)
    known = CgroupResolver(root).known()
    assert known == {}


def test_unknown_uid_gets_a_name_once_kubelet_writes_its_log_dir(tmp_path):
    root = copy_tree("kubelet-cgroupfs-v1", tmp_path)
    now = [0.0]
    kubelet = KubeletPods(root, rescan_s=1.0, clock=lambda: now[0])
    resolver = CgroupResolver(root, kubelet, rescan_s=1.0, clock=lambda: now[0])
    assert resolver.lookup(4026532805).startswith("pod:")
    (root / "var/log/pods/team-c_batch-job-q1w2e_0d1e2f3a-4b5c-4d6e-9f7a-8b9c0d1e2f3a/job").mkdir(parents=True)
    now[0] += 1.5
    resolver.refresh()
    assert resolver.lookup(4026532805) == "team-c/batch-job-q1w2e"
