"""Pod UID → name from kubelet's pod log directories and pod directories."""
from __future__ import annotations

import os

import pytest

import profiler.k8s.kubelet as kubelet_module
from profiler.k8s.kubelet import KubeletPods, hostname_from_etc_hosts, parse_log_dir_name
from tests.unit.test_k8s_trees import K8S, copy_tree

WORKER_UID = "8b9c0d1e-2f3a-4b4c-9d5e-6f7a8b9c0d1e"
CACHE_UID = "9c0d1e2f-3a4b-4c5d-8e6f-7a8b9c0d1e2f"
HEADER = "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n" \
         "fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n"


def test_log_dir_names():
    assert parse_log_dir_name("team-a_frontend-7f8d9c-2x4v6_7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d") == (
        "team-a", "frontend-7f8d9c-2x4v6", "7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d")
    assert parse_log_dir_name("kube-system_etcd-node-1_2d3c4b5a69788796a5b4c3d2e1f00f1e")[1] == "etcd-node-1"
    for bad in ("a_b", "a_b_c_d", "Team_x_7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d",
                "ns_na\x1bme_7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d", "ns_name_not-a-uid", ""):
        assert parse_log_dir_name(bad) is None, bad


def test_etc_hosts_hostname_lines():
    assert hostname_from_etc_hosts(HEADER + "10.244.1.13\tworker-0\n") == "worker-0"
    assert hostname_from_etc_hosts(HEADER + "10.244.1.14\tcache-0.cache.team-b.svc.cluster.local\tcache-0\n") == "cache-0"
    # HostAliases come after the pod's line; without a pod line they must not be taken.
    assert hostname_from_etc_hosts(HEADER + "\n# Entries added by HostAliases.\n10.0.0.53\tinternal-dns\n") is None
    # A hostNetwork pod's file is the node's /etc/hosts.
    assert hostname_from_etc_hosts("# Kubernetes-managed hosts file (host network).\n127.0.1.1\tnode-1\n") is None
    assert hostname_from_etc_hosts("127.0.0.1 localhost\n10.0.0.1 not-managed\n") is None
    assert hostname_from_etc_hosts(HEADER + "10.244.1.13\tevil\x1b]0;title\x07\n") is None
    assert hostname_from_etc_hosts(HEADER + "10.244.1.13\t" + "a" * 300 + "\n") is None
    assert hostname_from_etc_hosts("") is None


def test_names_from_log_dirs_and_kubelet_dirs():
    pods = KubeletPods(K8S / "kubelet-cgroupfs-v1")
    frontend = pods.identity("7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d")
    assert (frontend.label, frontend.containers, frontend.source) == (
        "team-a/frontend-7f8d9c-2x4v6", ("frontend",), "pod-logs")
    worker = pods.identity(WORKER_UID)
    assert (worker.label, worker.containers, worker.source) == (
        "team-b/worker-0", ("istio-proxy", "worker"), "kubelet-etc-hosts")
    assert pods.identity(CACHE_UID).label == "team-b/cache-5c6d7e8f9-abcde"
    assert pods.identity("0d1e2f3a-4b5c-4d6e-9f7a-8b9c0d1e2f3a") is None
    assert pods.identity("../../etc") is None


def test_the_service_account_token_is_never_opened(monkeypatch):
    opened = []
    real = kubelet_module.read_capped

    def spy(root, path, max_bytes):
        opened.append(str(path))
        return real(root, path, max_bytes)

    monkeypatch.setattr(kubelet_module, "read_capped", spy)
    assert KubeletPods(K8S / "kubelet-cgroupfs-v1").identity(WORKER_UID) is not None
    assert opened and not any(path.endswith("token") or "ca.crt" in path for path in opened)


def test_hostile_kubelet_dirs(tmp_path):
    root = copy_tree("kubelet-cgroupfs-v1", tmp_path / "n")
    worker = root / f"var/lib/kubelet/pods/{WORKER_UID}"
    secret = tmp_path / "etc-hosts"
    secret.write_text(HEADER + "10.1.1.1\tstolen-name\n")
    (worker / "etc-hosts").unlink()
    os.symlink(os.path.relpath(secret, worker), worker / "etc-hosts")
    cache = root / f"var/lib/kubelet/pods/{CACHE_UID}"
    with open(cache / "etc-hosts", "wb") as f:
        f.truncate(10 * 1024**3)
    assert KubeletPods(root).identity(WORKER_UID) is None
    assert KubeletPods(root).identity(CACHE_UID) is None


def test_namespace_file_must_be_a_namespace(tmp_path):
    root = copy_tree("kubelet-cgroupfs-v1", tmp_path)
    volume = next((root / f"var/lib/kubelet/pods/{WORKER_UID}/volumes/kubernetes.io~projected").iterdir())
    (volume / "..2024_05_01_10_00_00.1234567890/namespace").write_text("team-b/../kube-system")
    assert KubeletPods(root).identity(WORKER_UID) is None


@pytest.mark.parametrize("entry", ["a_b_c", "x" * 5000])
def test_odd_log_dir_entries_are_ignored(tmp_path, entry):
    (tmp_path / "var/log/pods" / entry[:255]).mkdir(parents=True)
    assert KubeletPods(tmp_path).identity(WORKER_UID) is None
