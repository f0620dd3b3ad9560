"""`netprof fix` end to end: a real capture of a lab pod whose somaxconn bites, the plan it
gives, --apply inside the pod's netns, --rollback, and a refusal when the value moved."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from profiler.lab.scenario_listen import ListenSomaxconnScenario
from profiler.lab.sysctl import read_sysctl, write_sysctl
from profiler.profile import ProfileOptions, run_profile

pytestmark = pytest.mark.usefixtures("bpf_ready", "lab_ready")


def netprof(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "profiler.cli", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.fixture
def somaxconn_capture(tmp_path):
    with ListenSomaxconnScenario() as scenario:
        def whole_run() -> None:
            scenario.start(2.0)
            scenario.wait()

        capture = run_profile(ProfileOptions(duration_s=0.5, interval_s=0.5), on_attached=whole_run,
                              log=lambda msg: None)
        path = tmp_path / "capture.json"
        path.write_text(json.dumps(capture.to_json()))
        yield path, scenario.lab.pods["server"].netns


def test_plan_apply_rollback(somaxconn_capture, tmp_path):
    capture_path, server_netns = somaxconn_capture
    journal = tmp_path / "journal"
    before = read_sysctl("net.core.somaxconn", netns=server_netns)
    host_before = read_sysctl("net.core.somaxconn")

    plan = netprof("fix", "--from", str(capture_path), "--only", "listen-overflow",
                   "--journal-dir", str(journal), "--out", str(tmp_path / "snippets"))
    assert plan.returncode == 0, plan.stderr
    assert "listen-overflow" in plan.stdout and "somaxconn" in plan.stdout
    assert f"would set net.core.somaxconn in netns /run/netns/{server_netns}" in plan.stdout
    assert "dry run: nothing was changed" in plan.stdout
    assert read_sysctl("net.core.somaxconn", netns=server_netns) == before
    yaml = next((tmp_path / "snippets").glob("*-pod.yaml")).read_text()
    assert "net.core.somaxconn" in yaml and "securityContext" in yaml

    applied = netprof("fix", "--from", str(capture_path), "--only", "listen-overflow", "--apply",
                      "--journal-dir", str(journal))
    assert applied.returncode == 0, applied.stdout + applied.stderr
    after = read_sysctl("net.core.somaxconn", netns=server_netns)
    assert int(after) > int(before), (before, after)
    assert read_sysctl("net.core.somaxconn") == host_before  # the node's own is untouched

    undone = netprof("fix", "--rollback", "--journal-dir", str(journal))
    assert undone.returncode == 0, undone.stdout + undone.stderr
    assert read_sysctl("net.core.somaxconn", netns=server_netns) == before


def test_apply_refuses_when_the_value_changed_since_the_capture(somaxconn_capture, tmp_path):
    capture_path, server_netns = somaxconn_capture
    write_sysctl("net.core.somaxconn", "100", netns=server_netns)  # someone changed it meanwhile
    result = netprof("fix", "--from", str(capture_path), "--only", "listen-overflow", "--apply",
                     "--journal-dir", str(tmp_path / "journal"))
    assert result.returncode == 1
    assert "refused" in result.stdout and "Traceback" not in result.stderr
    assert read_sysctl("net.core.somaxconn", netns=server_netns) == "100"
    assert not (tmp_path / "journal" / "fix-journal.json").exists()
