"""The containerd releases tests/k8s runs against, each where it is available: Debian's
(apt, 1.6 on bookworm) and the newer ones `tests/k8s/fetch_containerd.sh` unpacks from
Debian's newer suites into a private folder (nothing installed on the host)."""
from __future__ import annotations

import os
from pathlib import Path

from tests.k8s.containerd_node import ContainerdRelease, release_of

UNPACKED = Path(os.environ.get("NETPROF_CONTAINERD_DEBS",
                               Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
                               / "netprof/containerd-debs"))
APT_BIN = Path("/usr/bin")


def available_releases() -> list[ContainerdRelease]:
    found = []
    apt = release_of(APT_BIN, "apt")
    if apt is not None:
        found.append(apt)
    if UNPACKED.is_dir():
        for folder in sorted(UNPACKED.iterdir()):
            release = release_of(folder / "usr/bin", folder.name)
            if release is not None:
                found.append(release)
    return found


def missing_for_cri() -> str | None:
    """Why a private containerd cannot run here, or None."""
    if os.geteuid() != 0:
        return "not root: containerd needs root"
    if release_of(APT_BIN, "apt") is None:
        return "containerd is not installed (./bootstrap.sh test installs containerd, runc, " \
               "containernetworking-plugins and busybox-static)"
    for needed in ("/usr/sbin/runc", "/usr/lib/cni/bridge", "/usr/lib/cni/loopback", "/bin/busybox"):
        if not Path(needed).exists() and not Path(needed.replace("/sbin/", "/bin/")).exists():
            return f"{needed} is missing (apt-get install runc containernetworking-plugins busybox-static)"
    try:
        import grpc_tools  # noqa: F401
    except ImportError:
        return "grpcio-tools is missing (pip install -e '.[test]')"
    return None
