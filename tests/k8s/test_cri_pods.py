"""Pod names from a real containerd: pods made through CRI the way kubelet makes them, real
netprof over real BPF, the runtime's own files read as a DaemonSet pod reads them.

Each containerd release available here (tests/k8s/releases.py) runs once, privately (see
containerd_node.py). Before netprof starts, the node has `netprof-a/web` and `netprof-b/web`
(same name, other namespace), `netprof-a/doomed` and the hostNetwork pod
`netprof-a/hostnet`. While netprof captures, drops are made inside each pod (a different
count in each), `doomed` is deleted after the first interval and `netprof-a/late` is created.
"""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from profiler.capture import Capture
from profiler.k8s import ContainerdResolver
from profiler.profile import ProfileOptions, run_profile
from profiler.snapshot import Snapshot
from tests.k8s.cri_client import CriPod
from tests.k8s.releases import available_releases, missing_for_cri
from tests.k8s.traffic import rcvbuf_drops_in

pytestmark = pytest.mark.usefixtures("bpf_ready")

INTERVAL_S = 0.5
CAPTURE_S = 5.0
# Datagrams sent into each pod's never-read socket; all but about 9 are dropped. Distinct
# counts tell the pods' drops apart.
DATAGRAMS = {"a-web": 200, "b-web": 600, "doomed": 400, "late": 300, "hostnet": 100}
KEPT_BY_RCVBUF = 20  # at most this many fit in a 4 KiB buffer (9 measured)
RELEASES = available_releases()


@dataclass
class CriRun:
    release: str
    capture: Capture
    pods: dict[str, CriPod]
    snapshots: list[Snapshot]
    late_created_at: float          # monotonic, once RunPodSandbox + StartContainer returned
    doomed_known_after_delete: bool
    listing: list[dict]             # `netprof pods --json` while the first pods ran
    left_behind: list[str]          # what the private containerd left on the machine

    def pod_json(self, key: str) -> dict:
        inode = self.pods[key].netns_inode
        return next(p for p in self.capture.to_json()["pods"] if p["netns"] == inode)

    def drops(self, key: str) -> int:
        return self.pod_json(key)["drops"].get("SOCKET_RCVBUFF", 0)


def _workload(node, pods: dict[str, CriPod], first_interval: threading.Event, run: dict) -> None:
    for key in ("a-web", "b-web", "doomed", "hostnet"):
        rcvbuf_drops_in(pods[key].pause_netns, DATAGRAMS[key])
    first_interval.wait(timeout=10)
    node.delete_pod(pods["doomed"])
    late = node.run_pod("netprof-a", "late", str(uuid.uuid4()))
    run["late_created_at"] = time.monotonic()
    pods["late"] = late
    rcvbuf_drops_in(late.pause_netns, DATAGRAMS["late"])


@pytest.fixture(scope="module", params=RELEASES or [None], ids=lambda r: f"containerd-{r.version}" if r else "none")
def cri_run(request, tmp_path_factory) -> CriRun:
    from tests.conftest import missing_for_bpf, skip_or_fail
    from tests.k8s.containerd_node import PrivateContainerd, leftovers
    from tests.k8s.oci_image import image_archive, is_static, BUSYBOX

    reason = missing_for_bpf() or missing_for_cri() or (None if request.param else "no containerd found")
    if reason:
        skip_or_fail(reason)
    if not is_static(BUSYBOX):
        skip_or_fail(f"{BUSYBOX} is not static (apt-get install busybox-static)")
    release = request.param
    archive, reference = image_archive(Path.home() / ".cache/netprof/cri-image")
    node_root = tmp_path_factory.mktemp(f"cri-node-{release.name}")
    with PrivateContainerd(release, node_root, archive, reference) as node, \
            pytest.MonkeyPatch.context() as env:
        env.setenv("NETPROF_NODE_ROOT", str(node_root))
        pods = {
            "a-web": node.run_pod("netprof-a", "web", str(uuid.uuid4())),
            "b-web": node.run_pod("netprof-b", "web", str(uuid.uuid4())),
            "doomed": node.run_pod("netprof-a", "doomed", str(uuid.uuid4())),
            "hostnet": node.run_pod("netprof-a", "hostnet", str(uuid.uuid4()), host_network=True),
        }
        listing = subprocess.run([str(Path(sys.executable).with_name("netprof")), "pods", "--json"],
                                 capture_output=True, text=True, timeout=60, check=True)
        snapshots: list[Snapshot] = []
        first_interval = threading.Event()
        shared: dict = {}
        errors: list[BaseException] = []

        def workload() -> None:
            try:
                _workload(node, pods, first_interval, shared)
            except BaseException as error:  # reported by the fixture, not lost in a thread
                errors.append(error)

        worker = threading.Thread(target=workload, name="cri-workload")

        def after_each(snapshot: Snapshot) -> None:
            snapshots.append(snapshot)
            first_interval.set()

        try:
            capture = run_profile(ProfileOptions(duration_s=CAPTURE_S, interval_s=INTERVAL_S),
                                  on_attached=worker.start, on_snapshot=after_each, log=lambda msg: None)
        finally:
            first_interval.set()
            if worker.is_alive() or worker.ident is not None:
                worker.join(timeout=60)
        if errors:
            raise errors[0]
        doomed_known = pods["doomed"].netns_inode in ContainerdResolver(Path("/"), node_root).known()
    left = leftovers(node_root, {pod.uid for pod in pods.values()}, {pod.netns_path for pod in pods.values()})
    return CriRun(release.name, capture, dict(pods), snapshots, shared["late_created_at"], doomed_known,
                      json.loads(listing.stdout), left)


def _expected_identity(pod: CriPod) -> dict:
    return {"namespace": pod.namespace, "name": pod.name, "uid": pod.uid, "containers": ["app"],
            "source": "containerd"}


@pytest.mark.parametrize("key", ["a-web", "b-web", "late"])
def test_traffic_inside_a_pod_is_charged_to_its_kubernetes_name(cri_run, key):
    pod = cri_run.pods[key]
    entry = cri_run.pod_json(key)
    assert entry["pod"] == pod.label
    assert entry["kubernetes"] == _expected_identity(pod)
    drops = cri_run.drops(key)
    assert DATAGRAMS[key] - KEPT_BY_RCVBUF <= drops <= DATAGRAMS[key], (key, drops)


def test_two_pods_with_one_name_in_two_namespaces_stay_apart(cri_run):
    a, b = cri_run.pods["a-web"], cri_run.pods["b-web"]
    assert a.name == b.name and a.netns_inode != b.netns_inode
    assert (cri_run.pod_json("a-web")["pod"], cri_run.pod_json("b-web")["pod"]) == ("netprof-a/web", "netprof-b/web")
    assert cri_run.pod_json("a-web")["kubernetes"]["uid"] == a.uid
    assert cri_run.pod_json("b-web")["kubernetes"]["uid"] == b.uid
    # Each one's drops are its own: 200 and 600 datagrams, never summed into one pod.
    assert cri_run.drops("a-web") <= DATAGRAMS["a-web"] < DATAGRAMS["b-web"] - KEPT_BY_RCVBUF <= cri_run.drops("b-web")


def test_a_pod_created_mid_capture_is_named_within_one_interval(cri_run):
    late = cri_run.pods["late"]
    showing = [s for s in cri_run.snapshots if any(p.netns == late.netns_inode for p in s.pods)]
    assert showing, "the late pod's traffic never showed up"
    labels = [next(p.pod for p in s.pods if p.netns == late.netns_inode) for s in showing]
    # The first interval that sees it may end before a rescan; the one after must name it.
    assert all(label == late.label for label in labels[1:]), labels
    named_at = next(s.ended_s for s, label in zip(showing, labels) if label == late.label)
    assert named_at - cri_run.late_created_at <= 2 * INTERVAL_S, (named_at - cri_run.late_created_at, labels)


def test_a_pod_deleted_mid_capture_keeps_its_name(cri_run):
    doomed = cri_run.pods["doomed"]
    assert not cri_run.doomed_known_after_delete  # the runtime forgot it ...
    entry = cri_run.pod_json("doomed")            # ... the capture did not
    assert entry["pod"] == doomed.label and entry["kubernetes"] == _expected_identity(doomed)
    assert cri_run.drops("doomed") >= DATAGRAMS["doomed"] - KEPT_BY_RCVBUF
    assert not any(p["pod"] in ("unknown",) or p["pod"].startswith(("netns:", "cni-"))
                   for p in cri_run.capture.to_json()["pods"]
                   if p["netns"] in {pod.netns_inode for pod in cri_run.pods.values()})


def test_a_host_network_pod_never_becomes_host(cri_run):
    hostnet = cri_run.pods["hostnet"]
    entry = cri_run.pod_json("hostnet")  # its netns is the node's
    assert entry["pod"] == "host"
    assert "kubernetes" not in entry, entry["kubernetes"]
    assert not any(p["pod"] == hostnet.label for p in cri_run.capture.to_json()["pods"])
    assert hostnet.label not in cri_run.capture.known_pods.values()


def test_netprof_pods_lists_each_pods_netns_and_the_source_of_its_name(cri_run):
    by_netns = {row["netns"]: row for row in cri_run.listing}
    for key in ("a-web", "b-web", "doomed"):
        pod = cri_run.pods[key]
        row = by_netns[pod.netns_inode]
        assert (row["pod"], row["source"], row["uid"], row["containers"]) == (pod.label, "containerd", pod.uid, ["app"])
    host = by_netns[cri_run.pods["hostnet"].netns_inode]
    assert (host["pod"], host["source"], host["uid"]) == ("host", "host", "")


def test_the_private_containerd_leaves_nothing_behind(cri_run):
    """Pods, shims, netns, the bridge, pod cgroups and mounts are gone once it stops."""
    assert cri_run.left_behind == []
