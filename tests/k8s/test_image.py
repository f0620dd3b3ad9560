"""The DaemonSet image, built without a registry (deploy/build-image.sh, `make image`) and run
the way deploy/daemonset.yaml runs it (daemonset_shape.py: host PID and network, ALL
capabilities dropped but BPF, PERFMON, NET_ADMIN and SYS_ADMIN, read-only root,
no-new-privileges, the default seccomp profile, the manifest's hostPath mounts; not
--privileged), next to a private containerd with a CRI pod: `serve` must name that pod on
/metrics. The container reads the runtime's state where a DaemonSet pod does
(/run/containerd, mounted from the private containerd's state dir), with no NETPROF_NODE_ROOT.

Measured here: 75 s from nothing (debootstrap, apt and pip in the build, the run), 20 s
with the image built. NETPROF_IMAGE_TEST=0 leaves it out (said in the skip reason).
"""
from __future__ import annotations

import os
import re
import resource
import socket
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests.k8s.traffic import rcvbuf_drops_in

REPO = Path(__file__).resolve().parents[2]
IMAGE = os.environ.get("NETPROF_IMAGE", "localhost/netprof:0.1.0")
PODMAN_ROOT = os.environ.get("NETPROF_PODMAN_ROOT", "/var/lib/netprof-podman")
PODMAN_RUNROOT = os.environ.get("NETPROF_PODMAN_RUNROOT", "/run/netprof-podman")
PODMAN = ["podman", "--root", PODMAN_ROOT, "--runroot", PODMAN_RUNROOT]
SERVE_READY_S = 180.0  # BCC compiles every program at start-up: slow on 2 busy CPUs


def machine_ulimits() -> list[str]:
    """Not the DaemonSet's shape but this machine's: podman's default ulimits cannot be set
    where root lacks CAP_SYS_RESOURCE, so ask for what this process has (nproc at most
    podman's own default, as deploy/build-image.sh does)."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[1]
    nofile = 1048576 if nofile == resource.RLIM_INFINITY else nofile
    nproc = 32768 if nproc == resource.RLIM_INFINITY else min(nproc, 32768)
    return ["--ulimit", f"nofile={nofile}:{nofile}", "--ulimit", f"nproc={nproc}:{nproc}"]


_SAMPLE = re.compile(r'^netprof_drops_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$', re.M)
_LABEL = re.compile(r'(\w+)="([^"]*)"')


def pod_drops(metrics: str, label: str, netns: int) -> float | None:
    """The pod's SOCKET_RCVBUFF drops in a /metrics page, or None if it is not there. The
    pod's `namespace/name` label is the two labels kube-state-metrics joins on."""
    namespace, _, name = label.partition("/")
    for sample in _SAMPLE.finditer(metrics):
        labels = dict(_LABEL.findall(sample["labels"]))
        if labels == {"namespace": namespace, "pod": name, "netns": str(netns), "reason": "SOCKET_RCVBUFF"}:
            return float(sample["value"])
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def image() -> str:
    from tests.conftest import missing_for_bpf, skip_or_fail
    from tests.k8s.releases import missing_for_cri

    if os.environ.get("NETPROF_IMAGE_TEST") == "0":
        pytest.skip("NETPROF_IMAGE_TEST=0: the image is not built or run")
    reason = missing_for_bpf() or missing_for_cri()
    if reason:
        skip_or_fail(reason)
    env = {**os.environ, "NETPROF_IMAGE": IMAGE, "NETPROF_PODMAN_ROOT": PODMAN_ROOT,
           "NETPROF_PODMAN_RUNROOT": PODMAN_RUNROOT}
    built = subprocess.run([str(REPO / "deploy/build-image.sh")], env=env, capture_output=True, text=True)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    return IMAGE


def test_the_image_in_the_daemonsets_shape_names_a_cri_pod_on_metrics(image, tmp_path):
    from tests.k8s.containerd_node import PrivateContainerd, release_of
    from tests.k8s.daemonset_shape import podman_run
    from tests.k8s.oci_image import image_archive

    node = tmp_path / "node"
    node.mkdir()
    archive, reference = image_archive(Path.home() / ".cache/netprof/cri-image")
    name = f"netprof-image-test-{os.getpid()}"
    port = free_port()
    with PrivateContainerd(release_of(Path("/usr/bin"), "apt"), node, archive, reference) as runtime:
        pod = runtime.run_pod("netprof-img", "web", str(uuid.uuid4()))
        shape = podman_run(remap={"/run/containerd": str(node / "run/containerd"),
                                  "/var/log/pods": str(node / "var/log/pods")},
                           empty_dir_root=tmp_path / "empty-dirs")
        assert "--privileged" not in shape.options
        # The manifest's args, on a free loopback port (other tests may hold 9464).
        args = [a if not a.endswith(":9464") else f"127.0.0.1:{port}" for a in shape.args]
        try:  # a container podman created but could not start is removed too
            started = subprocess.run([*PODMAN, "run", "-d", "--name", name, *shape.options,
                                      *machine_ulimits(), image, *args],
                                     capture_output=True, text=True)
            assert started.returncode == 0, started.stderr
            metrics, drops = "", None
            deadline = time.monotonic() + SERVE_READY_S
            while time.monotonic() < deadline and drops is None:
                rcvbuf_drops_in(pod.pause_netns, 200)
                try:
                    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
                except OSError:
                    time.sleep(2)
                    continue
                drops = pod_drops(metrics, pod.label, pod.netns_inode)
                if drops is None:
                    time.sleep(1)
            logs = subprocess.run([*PODMAN, "logs", name], capture_output=True, text=True)
            assert drops is not None, (metrics[-2000:], logs.stdout[-2000:], logs.stderr[-2000:])
            assert drops > 0
        finally:
            subprocess.run([*PODMAN, "rm", "-f", "-t", "5", name], capture_output=True)
