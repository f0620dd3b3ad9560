"""A private containerd with its CRI plugin: its own root, state dir, socket, config, CNI
configuration and bridge, so it never meets a containerd of the machine or the lab.

The node tree: `<node>/run/containerd` is the runtime's state dir (so netprof, pointed at
`<node>` through NETPROF_NODE_ROOT, reads it where a DaemonSet pod reads the node's), and
`<node>/var/log/pods` holds the pods' log directories. /proc is the machine's. The netns
files the CNI setup makes stay in the machine's /var/run/netns (containerd 1.6 puts them
there); netprof reaches those pods through the sandbox's init.pid, the fallback the resolver
has for exactly that.

Settings this machine needs (design.md §9): `restrict_oom_score_adj` (root here lacks
CAP_SYS_RESOURCE: without it every sandbox fails with "can't get final child's PID"),
`SystemdCgroup = false` (PID 1 is not systemd; kubelet's cgroupfs driver names pod cgroups
/kubepods/<qos>/pod<uid>), a private CNI conf dir (podman drops its own conflist into
/etc/cni/net.d), and Debian's CNI plugins in /usr/lib/cni.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

# 198.18.0.0/15 is benchmarking space no machine routes; the lab uses 198.18.0.0/24 and the
# multi-queue NIC recipe 198.18.90.0/24.
POD_SUBNET = "198.18.77.0/24"
BRIDGE = "nptcri0"
CNI_BIN_DIR = "/usr/lib/cni"
CGROUP_ROOT = Path("/sys/fs/cgroup")
START_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ContainerdRelease:
    """One containerd to test: its binaries (containerd, ctr, containerd-shim-runc-v2)."""
    name: str        # "1.6 (apt)", "1.7 (trixie deb)", …
    bin_dir: Path
    version: str     # as `containerd --version` says
    major: int

    @property
    def containerd(self) -> Path:
        return self.bin_dir / "containerd"

    @property
    def ctr(self) -> Path:
        return self.bin_dir / "ctr"


def release_of(bin_dir: Path, name: str) -> ContainerdRelease | None:
    binary = bin_dir / "containerd"
    if not binary.is_file():
        return None
    out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=30).stdout.split()
    version = out[2] if len(out) >= 3 else "?"
    digits = version.lstrip("v").split(".")[0]
    return ContainerdRelease(name, bin_dir, version, int(digits) if digits.isdigit() else 0)


def config_toml(release: ContainerdRelease, node: Path, sandbox_image: str) -> str:
    """containerd's configuration: version 2 for 1.x, version 3 for 2.x (the CRI plugin split
    into images and runtime plugins, and the sandbox image moved to `pinned_images`)."""
    root, state = node / "var/lib/containerd", node / "run/containerd"
    # NRI would listen on the machine-wide /var/run/nri/nri.sock (on by default in 2.x).
    common = f'''root = "{root}"
state = "{state}"
disabled_plugins = ["io.containerd.nri.v1.nri"]
[grpc]
  address = "{state}/containerd.sock"
[ttrpc]
  address = "{state}/containerd.sock.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{node}/opt/containerd"
'''
    # 2.x reads a list of plugin dirs (bin_dir is deprecated there).
    bin_dirs = f'bin_dirs = ["{CNI_BIN_DIR}"]' if release.major >= 2 else f'bin_dir = "{CNI_BIN_DIR}"'
    cni = f'''{bin_dirs}
    conf_dir = "{node}/etc/cni/net.d"
    max_conf_num = 1'''
    runc = '''runtime_type = "io.containerd.runc.v2"
      [{prefix}.containerd.runtimes.runc.options]
        SystemdCgroup = false'''
    if release.major >= 2:
        runtime = 'plugins."io.containerd.cri.v1.runtime"'
        return "version = 3\n" + common + f'''[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{sandbox_image}"
[{runtime}]
  restrict_oom_score_adj = true
  [{runtime}.cni]
    {cni}
  [{runtime}.containerd]
    default_runtime_name = "runc"
    [{runtime}.containerd.runtimes.runc]
      {runc.format(prefix=runtime)}
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
'''
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return "version = 2\n" + common + f'''[{cri}]
  sandbox_image = "{sandbox_image}"
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  [{cri}.cni]
    {cni}
  [{cri}.containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      {runc.format(prefix=cri)}
'''


def cni_conflist(node: Path) -> dict:
    return {
        "cniVersion": "1.0.0",
        "name": "netprof-cri-test",
        "plugins": [{
            "type": "bridge", "bridge": BRIDGE, "isGateway": True, "ipMasq": False,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": POD_SUBNET}]],
                     "dataDir": str(node / "var/lib/cni/networks")},
        }],
    }


def cgroup_dirs(relative: str) -> list[Path]:
    """The directory of one cgroup path in every mounted hierarchy (v1 controllers and the
    unified v2 tree: this machine mounts both)."""
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split(" - ", 1)
        if len(fields) == 2 and fields[1].split()[0] in ("cgroup", "cgroup2"):
            mount_point = Path(fields[0].split()[4])
            found.append(mount_point / relative.lstrip("/"))
    return found


class PrivateContainerd:
    """Runs one containerd release for the length of a `with` block; everything it made is
    removed on exit, even after a failure: pods, shims, mounts, netns, the bridge, cgroups."""

    def __init__(self, release: ContainerdRelease, node: Path, image_archive: Path, image_ref: str):
        self.release = release
        self.node = node
        self.image_archive = image_archive
        self.image_ref = image_ref
        self.socket = node / "run/containerd/containerd.sock"
        self.log_root = node / "var/log/pods"
        self.log_path = node / "containerd.log"
        self._process: subprocess.Popen | None = None
        self._log = None
        self.client = None
        self.pods: list = []
        self._cgroup_parents_made: list[str] = []

    # ----------------------------------------------------------------- start
    def __enter__(self) -> "PrivateContainerd":
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _start(self) -> None:
        from tests.k8s.cri_client import CriClient

        for qos_dir in ("kubepods", "kubepods/besteffort"):
            if not any(d.is_dir() for d in cgroup_dirs(qos_dir)):
                self._cgroup_parents_made.append(qos_dir)
        conf_dir = self.node / "etc/cni/net.d"
        conf_dir.mkdir(parents=True)
        (conf_dir / "10-netprof-cri-test.conflist").write_text(json.dumps(cni_conflist(self.node)))
        self.log_root.mkdir(parents=True)
        config = self.node / "config.toml"
        config.write_text(config_toml(self.release, self.node, self.image_ref))
        env = {"PATH": f"{self.release.bin_dir}:/usr/sbin:/usr/bin:/sbin:/bin"}
        self._log = open(self.log_path, "wb")
        self._process = subprocess.Popen([str(self.release.containerd), "--config", str(config)],
                                         stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        self.client = CriClient(self.socket)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"containerd {self.release.version} exited: {self.log_tail()}")
            try:
                self.client.version(timeout_s=2.0)
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"containerd {self.release.version} did not answer CRI: {self.log_tail()}")
                time.sleep(0.2)
        imported = subprocess.run([str(self.release.ctr), "--address", str(self.socket), "-n", "k8s.io",
                                   "images", "import", str(self.image_archive)],
                                  capture_output=True, text=True, env=env, timeout=120)
        if imported.returncode != 0:
            raise RuntimeError(f"ctr images import failed: {imported.stderr.strip()}")

    def log_tail(self, lines: int = 15) -> str:
        try:
            return " | ".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    # ----------------------------------------------------------------- pods
    def run_pod(self, namespace: str, name: str, uid: str, *, host_network: bool = False,
                command: list[str] | None = None):
        """A pod with one app container ("app") running `command` (default: sleep)."""
        pod, config = self.client.run_pod(namespace, name, uid, self.log_root, host_network=host_network)
        self.pods.append(pod)
        self.client.start_container(pod, config, "app", self.image_ref,
                                    command or ["/bin/busybox", "sleep", "86400"])
        return pod

    def delete_pod(self, pod) -> None:
        self.client.delete_pod(pod)
        self.pods.remove(pod)

    # ----------------------------------------------------------------- teardown
    def __exit__(self, *exc) -> None:
        problems = []
        for pod in list(self.pods):
            try:
                self.delete_pod(pod)
            except Exception as error:  # containerd may be the thing that failed
                problems.append(f"{pod.label}: {error}")
        if self.client is not None:
            self.client.close()
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._log is not None:
            self._log.close()
        self._kill_leftover_shims()
        self._unmount_under_node()
        self._remove_leftover_netns()
        subprocess.run(["ip", "link", "del", BRIDGE], capture_output=True)
        self._remove_cgroups()

    def _kill_leftover_shims(self) -> None:
        """Shims outlive containerd by design; ours name our socket on their command line."""
        marker = str(self.socket).encode()
        for entry in Path("/proc").iterdir():
            if not entry.name.isdecimal():
                continue
            try:
                if marker in (entry / "cmdline").read_bytes():
                    os.kill(int(entry.name), signal.SIGKILL)
            except (OSError, ProcessLookupError):
                continue

    def _unmount_under_node(self) -> None:
        prefix = str(self.node) + "/"
        for _ in range(3):
            points = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()
                      if line.split()[4].startswith(prefix)]
            if not points:
                return
            for point in sorted(points, key=len, reverse=True):
                subprocess.run(["umount", "-l", point], capture_output=True)

    def _remove_leftover_netns(self) -> None:
        """Sandboxes removed normally take their netns with them; after a crash they do not."""
        for pod in self.pods:
            path = Path(pod.netns_path) if pod.netns_path.startswith("/var/run/netns/") else None
            if path is not None and path.exists():
                subprocess.run(["umount", "-l", str(path)], capture_output=True)
                path.unlink(missing_ok=True)

    def _remove_cgroups(self) -> None:
        uids = {pod.uid for pod in self.pods} | self._uids_seen
        for uid in uids:
            for pod_dir in cgroup_dirs(f"kubepods/besteffort/pod{uid}"):
                _remove_cgroup_tree(pod_dir)
        for qos_dir in reversed(self._cgroup_parents_made):
            for directory in cgroup_dirs(qos_dir):
                try:
                    directory.rmdir()
                except OSError:
                    pass  # not empty (someone else's pods) or already gone

    @property
    def _uids_seen(self) -> set[str]:
        return {d.name.split("_")[-1] for d in self.log_root.iterdir()} if self.log_root.is_dir() else set()


def leftovers(node: Path, uids: set[str], netns_paths: set[str]) -> list[str]:
    """What a PrivateContainerd left behind on the machine after its `with` block: nothing,
    unless its teardown is broken."""
    found = []
    if Path(f"/sys/class/net/{BRIDGE}").exists():
        found.append(f"bridge {BRIDGE}")
    found += [f"netns {path}" for path in sorted(netns_paths) if path and Path(path).exists()]
    found += [f"cgroup {d}" for uid in sorted(uids) for d in cgroup_dirs(f"kubepods/besteffort/pod{uid}") if d.exists()]
    found += [f"mount {line.split()[4]}" for line in Path("/proc/self/mountinfo").read_text().splitlines()
              if line.split()[4].startswith(f"{node}/")]
    marker = str(node).encode()
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdecimal() and marker in (entry / "cmdline").read_bytes():
                found.append(f"process {entry.name}")
        except OSError:
            continue
    return found


def _remove_cgroup_tree(directory: Path) -> None:
    if not directory.is_dir():
        return
    for child in directory.iterdir():
        if child.is_dir():
            _remove_cgroup_tree(child)
    procs = directory / "cgroup.procs"
    try:
        for pid in procs.read_text().split():
            os.kill(int(pid), signal.SIGKILL)
    except (OSError, ProcessLookupError):
        pass
    for _ in range(50):
        try:
            directory.rmdir()
            return
        except OSError:
            time.sleep(0.05)
