"""`fix --apply` / `--rollback` on the real kernel: sysctls and RPS masks inside lab namespaces.

Every value is checked through an independent path (`ip netns exec`, which runs sysctl/cat in
a process whose /sys was remounted for that netns), never through the engine's own reads.
"""
from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from profiler.analysis.findings import Change
from profiler.fix import netns_files
from profiler.fix import apply_changes, current_identity, format_report, rollback
from profiler.lab.topology import Lab, kill_netns_processes

pytestmark = pytest.mark.usefixtures("lab_ready")

REPO = Path(__file__).resolve().parents[2]
RPS_RX0 = "/sys/class/net/{dev}/queues/rx-0/rps_cpus"


def _sysfs_mounts() -> list[str]:
    # Only sysfs: other labs on the machine add and remove netns bind mounts meanwhile.
    return [line for line in Path("/proc/self/mountinfo").read_text().splitlines() if " - sysfs " in line]


def _netns_path(lab: Lab, pod: str) -> str:
    return f"/run/netns/{lab.netns_of(pod)}"


def _sysctl(lab: Lab, pod: str, key: str) -> str:
    return lab.run(pod, ["sysctl", "-n", key]).stdout.strip()


def _cat(lab: Lab, pod: str, path: str) -> str:
    return lab.run(pod, ["cat", path]).stdout.strip()


def _host_rps_masks() -> dict[str, str]:
    # The node's own devices: a wrong-netns write (the classic mistake: /sys in a setns'd
    # thread is still the node's) would land on the node's eth0, not the pod's.
    masks = {}
    for path in Path("/sys/class/net").glob("*/queues/rx-*/rps_cpus"):
        masks[str(path)] = path.read_text()
    return masks


def _snapshot(lab: Lab, pods: tuple[str, ...] = ("web", "db")) -> dict[str, str]:
    """Every value the tests touch or must not touch, read from outside the engine."""
    values = {}
    for pod in pods:
        values[f"{pod} somaxconn"] = _sysctl(lab, pod, "net.core.somaxconn")
        values[f"{pod} tcp_rmem"] = _sysctl(lab, pod, "net.ipv4.tcp_rmem")
        values[f"{pod} eth0 rps"] = _cat(lab, pod, RPS_RX0.format(dev="eth0"))
        values[f"node {pod}-veth rps"] = _cat(lab, "node", RPS_RX0.format(dev=lab.pods[pod].host_veth))
    values["host somaxconn"] = Path("/proc/sys/net/core/somaxconn").read_text().strip()
    values["host rps"] = json.dumps(_host_rps_masks(), sort_keys=True)
    return values


def _plan(lab: Lab) -> list[Change]:
    web = _netns_path(lab, "web")
    node = _netns_path(lab, "node")
    return [
        Change("sysctl", "net.core.somaxconn", "8192", netns=web, expected_current="4096"),
        Change("file", RPS_RX0.format(dev="eth0"), "2", netns=web, expected_current="0"),
        Change("file", RPS_RX0.format(dev=lab.pods["web"].host_veth), "1", netns=node, expected_current="0"),
    ]


@pytest.fixture
def lab():
    with Lab.up(["web", "db"]) as lab:
        yield lab


def _assert_applied(lab: Lab, before: dict[str, str]) -> None:
    after = _snapshot(lab)
    assert after["web somaxconn"] == "8192"
    assert int(after["web eth0 rps"], 16) == 0b10
    assert int(after["node web-veth rps"], 16) == 0b01
    untouched = {k: v for k, v in before.items() if k not in ("web somaxconn", "web eth0 rps", "node web-veth rps")}
    assert {k: after[k] for k in untouched} == untouched


@pytest.mark.parametrize("sysfs", ["detached-mount", "private-mount-namespace"])
def test_apply_then_rollback_leaves_every_value_as_before(lab, tmp_path, monkeypatch, sysfs):
    if sysfs == "private-mount-namespace":
        # The fallback for kernels without fsopen/fsmount (before 5.2).
        monkeypatch.setattr(netns_files, "USE_DETACHED_SYSFS", False)
    sysfs_before = _sysfs_mounts()
    before = _snapshot(lab)
    assert before["web somaxconn"] == "4096" and int(before["web eth0 rps"], 16) == 0

    report = apply_changes(_plan(lab), current_identity(), tmp_path)
    assert report.ok, format_report(report)
    assert [(r.previous, r.verified) for r in report.applied] == [("4096", True), ("0", True), ("0", True)]
    _assert_applied(lab, before)

    undo = rollback(tmp_path)
    assert undo.ok, format_report(undo)
    assert len(undo.applied) == 3 and all(r.verified for r in undo.applied)
    assert _snapshot(lab) == before
    again = rollback(tmp_path)
    assert again.applied == () and "already rolled back" in again.note
    assert _snapshot(lab) == before
    # No sysfs instance was left mounted (or propagated) where the process can see it.
    assert _sysfs_mounts() == sysfs_before


def test_changed_value_refuses_and_changes_nothing(lab, tmp_path):
    before = _snapshot(lab)
    plan = _plan(lab)
    plan[1] = Change("file", plan[1].key, "2", netns=plan[1].netns, expected_current="1")
    report = apply_changes(plan, current_identity(), tmp_path / "journal")
    assert report.applied == ()
    assert [(c.key, reason) for c, reason in report.refused] == [
        (plan[1].key, "changed since the plan: the plan saw '1', now '0'")]
    assert _snapshot(lab) == before
    assert not (tmp_path / "journal").exists()


def test_settings_a_pod_netns_cannot_take_are_refused(lab, tmp_path):
    web = _netns_path(lab, "web")
    before = _snapshot(lab)
    plan = [
        Change("sysctl", "net.core.somaxconn", "8192", netns=web),
        # Node-global: absent inside a child netns.
        Change("sysctl", "net.core.netdev_max_backlog", "2000", netns=web),
        # A device of the node is not in the pod.
        Change("file", RPS_RX0.format(dev=lab.pods["web"].host_veth), "1", netns=web),
    ]
    report = apply_changes(plan, current_identity(), tmp_path)
    reasons = {c.key: reason for c, reason in report.refused}
    assert set(reasons) == {plan[1].key, plan[2].key}
    assert "cannot read it" in reasons[plan[1].key]
    assert "not found in /sys of that netns" in reasons[plan[2].key]
    assert _snapshot(lab) == before


def test_a_write_the_kernel_refuses_midway_undoes_the_others(lab, tmp_path):
    web = _netns_path(lab, "web")
    before = _snapshot(lab)
    plan = _plan(lab)[:2] + [
        Change("sysctl", "net.ipv4.tcp_congestion_control", "no-such-algorithm", netns=web),
        Change("sysctl", "net.ipv4.tcp_rmem", "4096 65536 1048576", netns=web),
    ]
    report = apply_changes(plan, current_identity(), tmp_path)
    assert [r.verified for r in report.applied] == [True, True, False]
    assert "the kernel refused 'no-such-algorithm'" in report.applied[2].error
    assert len(report.rolled_back) == 3 and all(r.verified for r in report.rolled_back)
    assert _snapshot(lab) == before
    assert rollback(tmp_path).applied == ()


def test_not_root_refuses_with_one_line(lab, tmp_path):
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    before = _snapshot(lab)
    plan = [change.to_json() for change in _plan(lab)]
    script = (
        "import json, sys\n"
        "from profiler.analysis.findings import Change\n"
        "from profiler.fix import PlanIdentity, apply_changes, format_report\n"
        "args = json.loads(sys.argv[1])\n"
        "report = apply_changes([Change(**c) for c in args['plan']], PlanIdentity(**args['identity']),\n"
        "                       __import__('pathlib').Path(args['journal']))\n"
        "print('\\n'.join(format_report(report)))\n"
        "sys.exit(0 if report.ok else 1)\n"
    )
    journal = tmp_path / "journal"
    args = json.dumps({"plan": plan, "identity": current_identity().to_json(), "journal": str(journal)})
    proc = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-c", script, args],
        cwd=REPO, capture_output=True, text=True, timeout=30,
    )
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr == ""
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("refused: not root (euid 65534)")
    assert lines[1:] == ["nothing was written"]
    assert _snapshot(lab) == before
    assert not journal.exists()


def test_crash_between_journal_and_write_rolls_back(lab, tmp_path):
    before = _snapshot(lab)
    plan = [change.to_json() for change in _plan(lab)]
    # The process is SIGKILLed when it is about to make its second write: the first value is
    # changed, the second is journaled but never written, the third never journaled.
    script = (
        "import json, os, signal, sys\n"
        "from pathlib import Path\n"
        "from profiler.analysis.findings import Change\n"
        "from profiler.fix import apply as fix_apply\n"
        "real_write = fix_apply.write_value\n"
        "calls = []\n"
        "def dying_write(path, value):\n"
        "    calls.append(path)\n"
        "    if len(calls) == 2:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    real_write(path, value)\n"
        "fix_apply.write_value = dying_write\n"
        "args = json.loads(sys.argv[1])\n"
        "fix_apply.apply_changes([Change(**c) for c in args['plan']], fix_apply.current_identity(), Path(args['journal']))\n"
    )
    args = json.dumps({"plan": plan, "journal": str(tmp_path)})
    proc = subprocess.run([sys.executable, "-c", script, args], cwd=REPO, capture_output=True, text=True, timeout=30)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    crashed = _snapshot(lab)
    assert crashed["web somaxconn"] == "8192"
    assert crashed["web eth0 rps"] == before["web eth0 rps"]
    journal = json.loads((tmp_path / "fix-journal.json").read_text())
    assert [entry["change"]["key"] for entry in journal["entries"]] == [plan[0]["key"], plan[1]["key"]]

    undo = rollback(tmp_path)
    assert undo.ok, format_report(undo)
    assert [(r.previous, r.written) for r in undo.applied] == [("0", "0"), ("8192", "4096")]
    assert _snapshot(lab) == before


def test_rollback_skips_a_pod_that_is_gone(lab, tmp_path):
    before = _snapshot(lab)
    db = _netns_path(lab, "db")
    plan = _plan(lab) + [Change("sysctl", "net.core.somaxconn", "1024", netns=db, expected_current="4096")]
    assert apply_changes(plan, current_identity(), tmp_path).ok
    kill_netns_processes(lab.netns_of("db"))
    subprocess.run(["ip", "netns", "del", lab.netns_of("db")], check=True)
    undo = rollback(tmp_path)
    assert [(c.netns, "is gone" in reason) for c, reason in undo.skipped] == [(db, True)]
    assert len(undo.applied) == 3 and all(r.verified for r in undo.applied)
    # The db pod's veth died with its namespace.
    assert _snapshot(lab, pods=("web",)) == {k: v for k, v in before.items() if "db" not in k}
    journal = json.loads((tmp_path / "fix-journal.json").read_text())
    assert [entry["state"] for entry in journal["entries"]] == ["restored", "restored", "restored", "gone"]
    assert rollback(tmp_path).applied == ()
