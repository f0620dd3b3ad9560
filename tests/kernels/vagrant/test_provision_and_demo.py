"""The Vagrant box's provisioning, run for real in a matrix guest (issue 14 item 6).

`vagrant up` (vagrant/Vagrantfile) rsyncs the repository to /opt/netprof and runs
vagrant/provision/netprof.sh as root; then k3s.sh and demo.sh start the demo workloads. Here,
in the bookworm-6.1-vagrant guest (Debian 12's 6.1 under QEMU, the host's root seen
copy-on-write, QEMU's user-mode NAT to Debian's mirrors and PyPI), the same steps run for
real as far as this machine allows:

- the box lacks BCC: python3-bpfcc and libbpfcc are removed first (in the guest's
  copy-on-write view only), so bootstrap.sh's apt step installs them from deb.debian.org;
- the repository is copied with the rsync arguments Vagrant uses and the Vagrantfile's
  excludes, owned by a `vagrant` user as Vagrant's rsync__chown leaves it;
- netprof.sh is uploaded to /tmp/vagrant-shell and run as root in a login shell with a
  clean environment, as Vagrant's shell provisioner does; then once more (`vagrant provision`);
- the demo: k3s, its images and the box cannot be fetched here (docs/vagrant.md says what
  was tried), so the ConfigMap's programs from /opt/netprof/vagrant/demo/workloads.yaml run
  in lab pods named as the Deployments' pods (a containerd node tree under
  NETPROF_NODE_ROOT, as tests/integration/test_k8s_lab.py does), the lossy pod gets the init
  container's own `tc … netem loss 5%`, and `netprof profile --duration 10` — the
  provisioned /usr/local/bin/netprof — must report the findings docs/vagrant.md promises.

Collected only in that guest (tests/kernels/conftest.py): it removes and installs OS packages.
"""
from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
BOX_SRC = Path("/opt/netprof")          # the Vagrantfile's synced folder
NETPROF = "/usr/local/bin/netprof"       # the link netprof.sh makes
UPLOAD = Path("/tmp/vagrant-shell")      # where Vagrant's shell provisioner puts a script
BOX_PACKAGES = ("python3-bpfcc", "libbpfcc")  # not on the bento box: bootstrap.sh must install them
LOGIN_ENV = {"HOME": "/root", "USER": "root", "LOGNAME": "root", "LANG": "C.UTF-8",
             "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
PROVISION_LIMIT_S = 1800
APT_DIRS = ("/var/cache/apt/archives/partial", "/var/lib/apt/lists/partial", "/var/cache/debconf", "/var/log/apt")
PIP_CONFIGS = ("/etc/pip.conf", "/etc/xdg/pip/pip.conf", "/root/.config/pip/pip.conf", "/root/.pip/pip.conf")


def guest_out() -> Path:
    out = os.environ.get("NETPROF_GUEST_OUT")
    assert out, "NETPROF_GUEST_OUT is unset: this tier runs only inside the harness's bookworm-6.1-vagrant guest"
    return Path(out)


def in_harness_guest() -> bool:
    return "virtme" in Path("/proc/cmdline").read_text()


def vagrantfile_excludes() -> list[str]:
    text = (REPO / "vagrant/Vagrantfile").read_text()
    match = re.search(r"rsync__exclude:\s*\[([^\]]*)\]", text)
    assert match, "the Vagrantfile's synced folder has no rsync__exclude"
    return re.findall(r'"([^"]+)"', match.group(1))


def vagrantfile_rsync_args() -> list[str]:
    """The synced folder's rsync__args: what Vagrant's rsync runs (its own --exclude added)."""
    text = (REPO / "vagrant/Vagrantfile").read_text()
    match = re.search(r"rsync__args:\s*\[([^\]]*)\]", text)
    assert match, "the Vagrantfile's synced folder has no rsync__args"
    return [arg for arg in re.findall(r'"([^"]+)"', match.group(1)) if arg != "--verbose"]


def provisioners() -> dict[str, str]:
    text = (REPO / "vagrant/Vagrantfile").read_text()
    return dict(re.findall(r'config\.vm\.provision "(\w+)", type: "shell", path: "([^"]+)"', text))


def log(name: str, text: str) -> None:
    (guest_out() / name).write_text(text)


def run_logged(argv: list[str], name: str, timeout: float, **kw) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          timeout=timeout, **kw)
    wall = time.monotonic() - started
    log(name, f"$ {shlex.join(argv)}\n{proc.stdout}\n[exit {proc.returncode}, {wall:.1f} s]\n")
    return proc, wall


def installed(package: str) -> bool:
    status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True)
    return "install ok installed" in status.stdout


@dataclass(frozen=True)
class Provisioned:
    removed: tuple[str, ...]
    first: subprocess.CompletedProcess
    first_s: float
    again: subprocess.CompletedProcess
    again_s: float
    stamp_before_again: float
    stamp_after_again: float


def vagrant_shell(script: Path, name: str) -> tuple[subprocess.CompletedProcess, float]:
    """Vagrant's shell provisioner: the script uploaded, made executable, run as root in a
    login shell (sudo -E -H bash -l on the box; root here already)."""
    shutil.copyfile(script, UPLOAD)
    UPLOAD.chmod(0o755)
    return run_logged(["bash", "-l", "-c", f"{UPLOAD}"], name, PROVISION_LIMIT_S, env=LOGIN_ENV, cwd="/")


@pytest.fixture(scope="module")
def provisioned() -> Provisioned:
    assert in_harness_guest(), "refusing to provision outside a harness guest (it removes OS packages)"
    out = guest_out()
    # virtme-ng mounts empty tmpfs over /var/cache, /var/lib/apt and /var/log; every Debian or
    # Ubuntu system has these directories, and apt and debconf need them.
    for directory in APT_DIRS:
        Path(directory).mkdir(parents=True, exist_ok=True)
    # The box as Vagrant finds it: no BCC. Removed here, in the guest's copy-on-write view.
    removed = tuple(p for p in BOX_PACKAGES if installed(p))
    proc, _ = run_logged(["apt-get", "-y", "-q", "remove", *removed], "box-remove-bcc.log", 600,
                         env={**LOGIN_ENV, "DEBIAN_FRONTEND": "noninteractive"})
    assert proc.returncode == 0, (out / "box-remove-bcc.log").read_text()[-2000:]
    assert not any(installed(p) for p in BOX_PACKAGES)

    # The box's root has no pip configuration; this machine's points pip at local wheel
    # directories and caps versions. Removed (copy-on-write) so pip asks PyPI, as on the box.
    for conf in PIP_CONFIGS:
        Path(conf).unlink(missing_ok=True)
    # Nor a pip cache: every wheel comes over the network.
    Path("/root/.cache").mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512m", "box-pip-cache", "/root/.cache"], check=True)

    # Vagrant's rsync synced folder: rsync installed in the guest if missing (its Debian
    # capability runs apt-get), the tree copied, then chowned to the SSH user.
    if shutil.which("rsync") is None:
        proc, _ = run_logged(["bash", "-c", "apt-get -yqq update && apt-get -yqq install rsync"],
                             "box-install-rsync.log", 600, env={**LOGIN_ENV, "DEBIAN_FRONTEND": "noninteractive"})
        assert proc.returncode == 0, (out / "box-install-rsync.log").read_text()[-2000:]
    if subprocess.run(["id", "vagrant"], capture_output=True).returncode != 0:
        # virtme-ng binds a file of its own over /etc/shadow; useradd writes /etc/shadow+ and
        # renames it over the file, which a mount point refuses (EBUSY: "failure while writing
        # changes to /etc/shadow"). Unmounted, the guest's copy-on-write /etc has the real one.
        if os.path.ismount("/etc/shadow"):
            subprocess.run(["umount", "/etc/shadow"], check=True)
        subprocess.run(["useradd", "--create-home", "--shell", "/bin/bash", "vagrant"], check=True)
    # A user's clone has a .git directory, which ".git/" excludes; this checkout may be a git
    # worktree, whose .git is a file: excluded too, so the box gets what a user's would.
    excludes = [".vagrant/", ".git", *vagrantfile_excludes()]
    proc, _ = run_logged(["rsync", *vagrantfile_rsync_args(), *(f"--exclude={e}" for e in excludes),
                          f"{REPO}/", f"{BOX_SRC}/"], "box-rsync.log", 600)
    assert proc.returncode == 0, (out / "box-rsync.log").read_text()[-2000:]
    subprocess.run(["chown", "-R", "vagrant:vagrant", str(BOX_SRC)], check=True)

    script = BOX_SRC / "vagrant" / provisioners()["netprof"]
    first, first_s = vagrant_shell(script, "provision-netprof.log")
    stamp = BOX_SRC / ".venv/.netprof-installed"
    stamp_before = stamp.stat().st_mtime if stamp.exists() else 0.0
    # `vagrant provision --provision-with netprof` after `vagrant rsync`: the same script again.
    again, again_s = vagrant_shell(script, "provision-netprof-again.log")
    stamp_after = stamp.stat().st_mtime if stamp.exists() else 0.0
    log("provision-times.json", json.dumps({"first_s": round(first_s, 1), "again_s": round(again_s, 1),
                                            "removed_before": list(removed)}) + "\n")
    return Provisioned(removed, first, first_s, again, again_s, stamp_before, stamp_after)


def test_provision_installs_bcc_from_the_mirror_and_netprof_on_roots_path(provisioned):
    first = provisioned.first
    assert first.returncode == 0, first.stdout[-3000:]
    assert provisioned.removed == BOX_PACKAGES, f"the guest did not start without BCC: {provisioned.removed}"
    # bootstrap.sh's apt step ran and installed what the box lacked.
    installing = next((line for line in first.stdout.splitlines() if line.startswith("bootstrap: installing")), "")
    assert all(p in installing.split() for p in BOX_PACKAGES), first.stdout[-3000:]
    assert all(installed(p) for p in BOX_PACKAGES)
    assert "bootstrap: ready" in first.stdout
    # netprof.sh ends with `netprof --version`: the link it made, into the box's venv.
    link = Path(NETPROF)
    assert link.resolve() == (BOX_SRC / ".venv/bin/netprof").resolve(), link.resolve()
    version = subprocess.run([str(link), "--version"], capture_output=True, text=True, env=LOGIN_ENV)
    assert version.returncode == 0 and version.stdout.strip() in first.stdout, (version, first.stdout[-500:])
    # The venv sees the OS's BCC (system site packages), as the README says.
    where = subprocess.run([str(BOX_SRC / ".venv/bin/python"), "-c", "import bcc; print(bcc.__file__)"],
                           capture_output=True, text=True)
    assert where.returncode == 0 and where.stdout.startswith("/usr/lib/python3/dist-packages/"), where


def test_provisioning_again_only_checks(provisioned):
    again = provisioned.again
    assert again.returncode == 0, again.stdout[-3000:]
    assert "bootstrap: installing" not in again.stdout, again.stdout[-3000:]
    assert provisioned.stamp_before_again == provisioned.stamp_after_again > 0  # no pip install again
    assert "bootstrap: ready" in again.stdout


# ------------------------------------------------------------------------------ the demo

DEMO_PODS = ("backlog", "backlog-load", "sink", "lossy", "steady")


def box_manifest(box_src: Path) -> list[dict]:
    import yaml

    text = (box_src / "vagrant/demo/workloads.yaml").read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc]


def deployment(docs: list[dict], name: str) -> dict:
    return next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == name)["spec"]["template"]["spec"]


def container_env(spec: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in spec["containers"][0].get("env", [])}


def wait_for_line(proc: subprocess.Popen, timeout_s: float) -> str:
    import selectors

    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        assert selector.select(timeout_s), f"{proc.args!r} printed nothing in {timeout_s:g} s"
    line = proc.stdout.readline()
    assert line, f"{proc.args!r} exited (status {proc.wait()})"
    return line


@dataclass
class DemoRun:
    report: subprocess.CompletedProcess
    wall_s: float
    labels: dict[str, str]          # lab pod -> namespace/name as the report should show it
    qdisc: str                      # the lossy pod's eth0 qdisc after the init container's command
    exited_early: dict[str, int]    # demo programs that were no longer running after the capture


def run_demo(netprof: str, box_src: Path, work: Path, out: Path, loss=None) -> DemoRun:
    """The ConfigMap's programs from box_src's manifest in lab pods named as the Deployments'
    pods, and `netprof profile --duration 10 --output out` run meanwhile (docs/vagrant.md §4).
    `loss(lab, command)` applies the lossy pod's init container command (default: run it in
    the pod)."""
    from profiler.lab.scenarios import lab_time_scale
    from profiler.lab.topology import Lab
    from tests.integration.test_k8s_lab import FakeContainerdNode

    docs = box_manifest(box_src)
    programs = next(d for d in docs if d["kind"] == "ConfigMap")["data"]
    scripts = work / "scripts"
    scripts.mkdir(parents=True, exist_ok=True)
    for name, text in programs.items():
        (scripts / name).write_text(text)
    node_root = work / "k8s-node"
    node_root.mkdir(parents=True, exist_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    scale = lab_time_scale()
    with Lab.up(list(DEMO_PODS)) as lab, FakeContainerdNode(node_root, lab, namespace="netprof-demo") as node:
        # The lossy pod's init container, verbatim: netem in the pod's own network namespace.
        netem = deployment(docs, "lossy")["initContainers"][0]["command"]
        (loss or (lambda lab, command: lab.run("lossy", command)))(lab, netem)
        qdisc = lab.run("lossy", ["tc", "qdisc", "show", "dev", "eth0"]).stdout
        running: list[subprocess.Popen] = []

        def start(pod: str, program: str, **override: str) -> subprocess.Popen:
            env = {"PATH": "/usr/bin:/bin", **container_env(deployment(docs, pod)), **override}
            proc = lab.popen(pod, [sys.executable, "-u", str(scripts / program)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            running.append(proc)
            return proc

        try:
            # Service names (backlog:8080, sink:5201) become the pods' IPs: no cluster DNS here.
            servers = [start("backlog", "slow_server.py"), start("sink", "sink.py")]
            for server in servers:
                wait_for_line(server, 20 * scale)
            port = container_env(deployment(docs, "backlog"))["PORT"]
            start("backlog-load", "connect_flood.py", TARGET=f"{lab.pods['backlog'].ip}:{port}")
            for sender in ("lossy", "steady"):
                start(sender, "paced_sender.py", TARGET=f"{lab.pods['sink'].ip}:5201")
            time.sleep(2 * scale)  # the flood fills the queue, the senders connect
            # The provisioned netprof, as a user types it in the VM.
            argv = [netprof, "profile", "--duration", "10", "--output", str(out)]
            started = time.monotonic()
            report = subprocess.run(argv, capture_output=True, text=True, timeout=900,
                                    env={**LOGIN_ENV, "NETPROF_NODE_ROOT": str(node_root)})
            wall = time.monotonic() - started
            exited = {Path(proc.args[-1]).name + f"@{proc.args[3]}": proc.returncode
                      for proc in running if proc.poll() is not None}
        finally:
            for proc in running:
                proc.kill()
                proc.wait()
        (out / "report.txt").write_text(f"$ {shlex.join(argv)}\n{report.stdout}\n{report.stderr}\n"
                                        f"[exit {report.returncode}, {wall:.1f} s]\n")
        labels = {short: pod.label for short, pod in node.pods.items()}
    return DemoRun(report, wall, labels, qdisc, exited)


@pytest.fixture(scope="module")
def demo(provisioned, tmp_path_factory) -> DemoRun:
    assert provisioned.first.returncode == 0, "provisioning failed: no netprof to run the demo under"
    return run_demo(NETPROF, BOX_SRC, tmp_path_factory.mktemp("demo"), guest_out() / "demo")


def findings_by_pod(out: Path) -> tuple[list[tuple[str, str]], dict]:
    document = json.loads((out / "capture.json").read_text())
    label_of = {p["netns"]: p["pod"] for p in document["pods"]}
    findings = [(f["kind"], label_of.get(f["pod"], f["pod"]) if f["pod"] is not None else None)
                for f in document["findings"]]
    return findings, document


def test_the_lossy_pod_runs_the_init_containers_netem(demo):
    assert "netem" in demo.qdisc and "loss 5%" in demo.qdisc, demo.qdisc
    assert not demo.exited_early, f"demo programs exited during the capture: {demo.exited_early}"


def test_profile_reports_the_findings_the_docs_promise(demo):
    assert demo.report.returncode == 0, demo.report.stderr[-3000:]
    findings, _ = findings_by_pod(guest_out() / "demo")
    labels = demo.labels
    assert ("listen-overflow", labels["backlog"]) in findings, findings
    assert ("tcp-retransmits", labels["lossy"]) in findings, findings
    assert not any(pod == labels["steady"] for _, pod in findings), findings
    # The report names the pods as Kubernetes does: namespace/name of the Deployment's pod.
    assert labels["backlog"].startswith("netprof-demo/backlog-")
    assert labels["backlog"] in demo.report.stdout and labels["lossy"] in demo.report.stdout, demo.report.stdout[-3000:]


def test_the_listen_overflow_says_the_backlog_bites(demo):
    _, document = findings_by_pod(guest_out() / "demo")
    label_of = {p["netns"]: p["pod"] for p in document["pods"]}
    overflow = next(f for f in document["findings"]
                    if f["kind"] == "listen-overflow" and label_of.get(f["pod"], f["pod"]) == demo.labels["backlog"])
    evidence = overflow["evidence"]
    # docs/vagrant.md: a limit of 4, limit_that_bites: backlog, and the [app] fix. The server
    # listened before the capture, as a user's pods do before `netprof` starts: what it asked
    # for was not seen, and is not guessed.
    assert evidence.get("accept_queue_limit") == 4, evidence
    assert evidence.get("requested_backlog") is None, evidence
    assert evidence.get("limit_that_bites") == "backlog", evidence
    assert any(fix["scope"] == "app" for fix in overflow["fixes"]), overflow["fixes"]
