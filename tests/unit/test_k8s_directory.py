"""The Kubernetes resolvers inside PodDirectory: order, caching with expiry, vanishing pods."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from profiler.k8s import CgroupResolver, ContainerdResolver, KubeletPods, kubernetes_resolvers
from profiler.k8s.base import CachedScanResolver, PodIdentity, PodNetns
from profiler.netns_names import HOST_LABEL, HostResolver
from profiler.pod_listing import default_pod_directory
from profiler.pods import NamedNetnsResolver, PodDirectory
from tests.unit.test_k8s_trees import HOST_NETNS, consistent_copy, copy_tree, inode

WEB = "default/web-7d4b9c8f6d-x8k2p"
WEB_NETNS = "run/netns/cni-3f9c1d2e-8a7b-4c5d-9e0f-1a2b3c4d5e6f"


def test_default_directory_names_pods_on_a_containerd_node(tmp_path):
    root = consistent_copy("containerd-1.7", tmp_path)
    pods = default_pod_directory(root)
    web = inode(root / WEB_NETNS)
    # The named-netns resolver would say "cni-3f9c…"; the Kubernetes name wins.
    assert pods.label(web) == WEB
    assert pods.label(HOST_NETNS) == HOST_LABEL  # kube-proxy is hostNetwork: still `host`
    assert pods.known() == {web: WEB, inode(root / "run/netns/cni-a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"):
                            "kube-system/coredns-5dd5756b68-9kq4m", HOST_NETNS: HOST_LABEL}
    assert pods.netns_paths()[web] == root / WEB_NETNS  # the runtime's path, not /proc/<pid>
    identity = pods.identity(web)
    assert identity.containers == ("log-shipper", "nginx") and identity.source == "containerd"
    assert pods.identity(HOST_NETNS) is None


def test_the_host_entry_has_no_kubernetes_identity_with_a_host_network_pod(tmp_path):
    """kube-proxy is hostNetwork (as netprof's own DaemonSet pod is); containerd records its
    app container's netns as /proc/<pause pid>/ns/net, the node's: `host` stays `host`."""
    root = consistent_copy("containerd-1.7", tmp_path)  # kube-proxy's container: /proc/1501/ns/net
    pods = default_pod_directory(root)
    assert pods.label(HOST_NETNS) == HOST_LABEL
    assert pods.identity(HOST_NETNS) is None
    assert pods.known()[HOST_NETNS] == HOST_LABEL


def test_cgroups_name_pods_where_runtime_state_is_unreadable(tmp_path):
    root = consistent_copy("containerd-1.7", tmp_path)
    shutil.rmtree(root / "run/containerd")
    pods = default_pod_directory(root)
    web = inode(root / WEB_NETNS)
    assert pods.label(web) == WEB
    assert pods.identity(web).source == "cgroup+pod-logs"


def test_every_fixture_node_gets_kubernetes_names(tmp_path):
    expected = {
        "containerd-1.7": {"default/web-7d4b9c8f6d-x8k2p", "kube-system/coredns-5dd5756b68-9kq4m"},
        "k3s-containerd-2.0": {"shop/api-6c9f8d7b5-q2w3e", "shop/db-0"},
        "crio-1.30": {"payments/ledger-5f6d7c8b9-k4l5m", "openshift-dns/dns-default-7x8y9"},
        "kubelet-cgroupfs-v1": {"team-a/frontend-7f8d9c-2x4v6", "team-b/worker-0", "team-b/cache-5c6d7e8f9-abcde",
                                "pod:0d1e2f3a-4b5c-4d6e-9f7a-8b9c0d1e2f3a"},
    }
    for name, labels in expected.items():
        root = consistent_copy(name, tmp_path / name) if name != "kubelet-cgroupfs-v1" else copy_tree(name, tmp_path)
        known = default_pod_directory(root).known()
        assert set(known.values()) == labels | {HOST_LABEL}, name


def test_a_pod_that_dies_mid_capture_keeps_its_label(tmp_path):
    root = consistent_copy("containerd-1.7", tmp_path)
    # Rescanning on every call (rescan_s=0) shows the pod gone at once.
    pods = PodDirectory([HostResolver(root), ContainerdResolver(root, rescan_s=0),
                         CgroupResolver(root, KubeletPods(root, rescan_s=0), rescan_s=0),
                         NamedNetnsResolver(root, rescan_s=0)])
    web = inode(root / WEB_NETNS)
    assert pods.label(web) == WEB
    # The pod is deleted: containerd removes its bundles, CNI its netns, kubelet its logs,
    # and its processes exit.
    tasks = root / "run/containerd/io.containerd.runtime.v2.task/k8s.io"
    for task in list(tasks.iterdir()):
        if json.loads((task / "config.json").read_text())["annotations"].get("io.kubernetes.cri.sandbox-name") == "web-7d4b9c8f6d-x8k2p":
            shutil.rmtree(task)
    (root / WEB_NETNS).unlink()
    for pid in ("2101", "2111", "2112"):
        shutil.rmtree(root / "proc" / pid)
    shutil.rmtree(root / "var/log/pods/default_web-7d4b9c8f6d-x8k2p_6b7f3c2e-1a4d-4e8b-9c2f-0d5e6a7b8c9d")
    assert pods.label(web) == WEB
    assert pods.known()[web] == WEB
    assert web not in pods.netns_paths()


class CountingResolver(CachedScanResolver):
    source = "test"

    def __init__(self, entries, **cache):
        super().__init__(**cache)
        self.entries = entries
        self.scans = 0

    def _scan(self):
        self.scans += 1
        return list(self.entries)


def entry(inode_number: int, name: str) -> PodNetns:
    return PodNetns(inode_number, PodIdentity("ns", name, "", (), "test"), Path(f"/run/netns/{name}"))


def test_rescans_are_lazy_and_rate_limited():
    now = [100.0]
    resolver = CountingResolver([entry(1, "a")], rescan_s=2.0, clock=lambda: now[0])
    assert resolver.lookup(1) == "ns/a" and resolver.scans == 1
    assert resolver.lookup(1) == "ns/a" and resolver.scans == 1  # known: no rescan
    assert resolver.lookup(2) is None and resolver.scans == 1    # unknown, but scanned just now
    now[0] += 2.5
    resolver.entries.append(entry(2, "b"))
    assert resolver.lookup(2) == "ns/b" and resolver.scans == 2
    resolver.known()
    resolver.paths()
    assert resolver.scans == 2


def test_a_new_inode_rescans_sooner_so_new_pods_are_named_at_once():
    """A pod created just after a scan is named on its next lookup (the next interval), not
    `rescan_s` later, even when its netns showed up before the runtime's record of it (CNI
    setup runs first); an inode unknown for longer than `rescan_s` waits like before."""
    now = [100.0]
    resolver = CountingResolver([entry(1, "a")], rescan_s=2.0, clock=lambda: now[0])
    assert resolver.lookup(1) == "ns/a" and resolver.scans == 1
    now[0] += 0.5
    assert resolver.lookup(2) is None and resolver.scans == 2     # its netns, no record yet
    now[0] += 0.1
    assert resolver.lookup(2) is None and resolver.scans == 2     # within the fast floor
    now[0] += 0.4
    resolver.entries.append(entry(2, "new"))
    assert resolver.lookup(2) == "ns/new" and resolver.scans == 3  # 1 s later: named
    now[0] += 0.5
    assert resolver.lookup(3) is None and resolver.scans == 4
    now[0] += 2.5                                                 # 3 unknown for 2.5 s
    assert resolver.lookup(3) is None and resolver.scans == 5     # rescan_s since the last
    now[0] += 0.5
    assert resolver.lookup(3) is None and resolver.scans == 5     # old miss: rate-limited


def test_vanished_pods_expire_so_reused_inodes_get_new_names():
    now = [0.0]
    resolver = CountingResolver([entry(7, "old")], rescan_s=1.0, forget_after_s=30.0, clock=lambda: now[0])
    assert resolver.lookup(7) == "ns/old"
    resolver.entries = []
    now[0] += 5
    resolver.refresh()
    assert resolver.lookup(7) == "ns/old"          # an event from a moment ago still gets a name
    assert 7 not in resolver.known() and 7 not in resolver.paths()
    now[0] += 30
    assert resolver.lookup(7) is None              # forgotten: the kernel may reuse inode 7
    resolver.entries = [entry(7, "new")]
    now[0] += 1
    assert resolver.lookup(7) == "ns/new"


def test_node_root_from_the_environment(tmp_path, monkeypatch):
    # `kubectl debug node/…` sees the node's filesystem under /host and the node's /proc
    # (hostPID) at /proc.
    node = copy_tree("containerd-1.7", tmp_path / "host")
    monkeypatch.setenv("NETPROF_NODE_ROOT", str(node))
    resolvers = kubernetes_resolvers(tmp_path / "empty")
    containerd = next(r for r in resolvers if isinstance(r, ContainerdResolver))
    assert WEB in containerd.known().values()
    monkeypatch.delenv("NETPROF_NODE_ROOT")
    containerd = next(r for r in kubernetes_resolvers(tmp_path / "empty") if isinstance(r, ContainerdResolver))
    assert containerd.known() == {}


def test_a_new_pods_cni_name_gives_way_to_its_kubernetes_name(tmp_path):
    # CNI mounts /run/netns/cni-<uuid> before containerd writes the sandbox's bundle: an
    # event in that window is labelled by the named-netns resolver, and the runtime's name
    # must replace it once the bundle is there.
    root = consistent_copy("containerd-1.7", tmp_path)
    tasks = root / "run/containerd/io.containerd.runtime.v2.task/k8s.io"
    parked = tmp_path / "parked"
    shutil.move(str(tasks), parked)
    for pid in ("2101", "2111", "2112"):  # and no process runs in it yet
        shutil.move(str(root / "proc" / pid), tmp_path / pid)
    pods = PodDirectory([HostResolver(root), ContainerdResolver(root, rescan_s=0),
                         CgroupResolver(root, KubeletPods(root, rescan_s=0), rescan_s=0),
                         NamedNetnsResolver(root, rescan_s=0)])
    web = inode(root / WEB_NETNS)
    assert pods.label(web) == "cni-3f9c1d2e-8a7b-4c5d-9e0f-1a2b3c4d5e6f"
    assert pods.known()[web] == "cni-3f9c1d2e-8a7b-4c5d-9e0f-1a2b3c4d5e6f"
    shutil.move(str(parked), tasks)
    for pid in ("2101", "2111", "2112"):
        shutil.move(str(tmp_path / pid), root / "proc" / pid)
    assert pods.label(web) == WEB
    assert pods.known()[web] == WEB
