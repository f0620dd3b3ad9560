"""Rollback reads its journal as untrusted: a journaled value of the wrong shape is not
written back, an entry whose netns cannot be reached does not stop the others, and what is
left is named (exit 1)."""
from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from profiler.analysis.findings import Change
from profiler.fix import apply as fix_apply
from profiler.fix import JOURNAL_FORMAT, apply_changes, current_identity, format_report, rollback
from tests.unit.test_fix_apply import IRQ_LIST, RPS, SOMAXCONN, identity, journal_dir, node  # noqa: F401 (fixtures)

NETPROF = Path(sys.executable).parent / "netprof"


def _tamper(journal_dir: Path, key: str, previous: str) -> None:
    """What someone with the journal file in hand could write into it."""
    path = journal_dir / "fix-journal.json"
    journal = json.loads(path.read_text())
    for entry in journal["entries"]:
        if entry["change"]["key"] == key:
            entry["previous"] = previous
    path.write_text(json.dumps(journal))


@pytest.mark.parametrize("key, previous", [
    (SOMAXCONN.key, "4096\nkernel.x=1"),       # a second line: not a value the kernel printed
    (SOMAXCONN.key, "4096 kernel.x=1"),        # not shaped like the integer netprof wrote over it
    (SOMAXCONN.key, "\x1b]52;c;ZXZpbA==\x07"),  # control characters
    (SOMAXCONN.key, ""),
    (IRQ_LIST.key, "0-1\n"),                   # not a CPU list
    (IRQ_LIST.key, "0-1,kernel"),
    (RPS.key, "3;reboot"),                     # not a CPU mask
])
def test_a_malformed_journaled_value_is_skipped_and_the_rest_restored(node, identity, journal_dir, key, previous):
    assert apply_changes([SOMAXCONN, IRQ_LIST, RPS], identity, journal_dir, root=node).ok
    target = {SOMAXCONN.key: "proc/sys/net/core/somaxconn", IRQ_LIST.key: "proc/irq/24/smp_affinity_list",
              RPS.key: "sys/devices/virtual/net/eth0/queues/rx-0/rps_cpus"}
    written = (node / target[key]).read_text()
    _tamper(journal_dir, key, previous)

    report = rollback(journal_dir, root=node)
    assert not report.ok
    assert [change.key for change, _ in report.unrestorable] == [key]
    assert "malformed" in report.unrestorable[0][1] or "not shaped like" in report.unrestorable[0][1]
    assert (node / target[key]).read_text() == written  # nothing written there
    others = {SOMAXCONN.key, IRQ_LIST.key, RPS.key} - {key}
    assert {r.change.key for r in report.applied} == others and all(r.verified for r in report.applied)
    assert f"1 value(s) not restored ({key})" in report.note
    assert any(line.startswith(f"NOT restored {key}: ") for line in format_report(report))
    journal = json.loads((journal_dir / "fix-journal.json").read_text())
    assert {e["change"]["key"]: e["state"] for e in journal["entries"]} == {
        **{k: "restored" for k in others}, key: "open"}


def test_multi_value_sysctls_keep_their_tabs(node, identity, journal_dir):
    rmem = Change("sysctl", "net.ipv4.tcp_rmem", "4096 262144 6291456")
    assert apply_changes([rmem], identity, journal_dir, root=node).ok
    assert rollback(journal_dir, root=node).ok
    assert (node / "proc/sys/net/ipv4/tcp_rmem").read_text() == "4096\t131072\t6291456\n"


def test_an_entry_whose_netns_cannot_be_reached_does_not_stop_the_rollback(tmp_path, monkeypatch):
    """Live root: the journal holds a pod-netns entry whose netns path cannot be looked at
    (stat answers EACCES) and, older, an entry of the node's own somaxconn whose value is
    already as journaled (so the rollback reads it and writes nothing)."""
    if os.geteuid() != 0:
        pytest.skip("the live rollback path needs root")
    journal_dir = tmp_path / "journal"
    journal_dir.mkdir(mode=0o700)
    here = current_identity()
    somaxconn_now = Path("/proc/sys/net/core/somaxconn").read_text().strip()
    unreachable = "/run/netns/netprof-test-unreachable"
    entries = [
        {"apply_id": "a", "journaled_at": 0, "state": "open", "netns_inode": None, "previous": somaxconn_now,
         "change": Change("sysctl", "net.core.somaxconn", str(int(somaxconn_now) + 1)).to_json()},
        {"apply_id": "a", "journaled_at": 0, "state": "open", "netns_inode": 4026599999, "previous": "128",
         "change": Change("sysctl", "net.core.somaxconn", "4096", netns=unreachable).to_json()},
    ]
    (journal_dir / "fix-journal.json").write_text(json.dumps(
        {"format": JOURNAL_FORMAT, "identity": here.to_json(), "created_at": 0, "entries": entries}))
    os.chmod(journal_dir / "fix-journal.json", 0o600)
    real_stat = os.stat

    def stat(path, *args, **kwargs):
        if str(path) == unreachable:
            raise PermissionError(errno.EACCES, "Permission denied", unreachable)
        return real_stat(path, *args, **kwargs)

    monkeypatch.setattr(fix_apply.os, "stat", stat)
    report = rollback(journal_dir)
    assert not report.ok
    assert [(c.netns, reason) for c, reason in report.unrestorable] == [
        (unreachable, f"cannot reach netns {unreachable}: Permission denied ({unreachable})")]
    assert [(r.change.key, r.change.netns, r.verified) for r in report.applied] == [("net.core.somaxconn", None, True)]
    assert f"net.core.somaxconn in netns {unreachable}" in report.note
    assert Path("/proc/sys/net/core/somaxconn").read_text().strip() == somaxconn_now


def test_the_cli_rollback_names_what_is_left_and_exits_1(node, identity, journal_dir, monkeypatch):
    # Through run_fix, as `netprof fix --rollback` runs it (a fake root: the CLI itself only
    # rolls back the live node).
    from rich.console import Console

    from profiler.fix import command

    assert apply_changes([SOMAXCONN, RPS], identity, journal_dir, root=node).ok
    _tamper(journal_dir, SOMAXCONN.key, "4096\nkernel.x=1")
    monkeypatch.setattr(command, "rollback", lambda d, **kw: rollback(d, root=node, **kw))
    console = Console(record=True, width=200)
    assert command.run_fix(capture=None, apply=False, do_rollback=True, journal_dir=journal_dir, out_dir=None,
                           only=None, console=console) == 1
    text = console.export_text()
    assert "NOT restored net.core.somaxconn: the journaled previous value is malformed" in text
    assert "1 value(s) not restored (net.core.somaxconn)" in text
    assert (node / "proc/sys/net/core/somaxconn").read_text() == "8192\n"


def test_the_cli_rollback_holds_the_journal_to_netprofs_sysctls(node, identity, journal_dir):
    # Any net.* sysctl is a valid target for the engine; the CLI rolls back only the ones
    # netprof's fixes set, and refuses a journal naming another as a whole.
    rmem = Change("sysctl", "net.ipv4.tcp_rmem", "4096 262144 6291456")
    assert apply_changes([SOMAXCONN, rmem], identity, journal_dir, root=node).ok
    from profiler.analysis.fixes import APPLICABLE_SYSCTLS

    report = rollback(journal_dir, root=node, allowed_sysctls=APPLICABLE_SYSCTLS)
    assert report.applied == () and not report.ok
    assert "not a sysctl netprof's fixes change" in dict((c.key, r) for c, r in report.refused)["net.ipv4.tcp_rmem"]
    assert (node / "proc/sys/net/core/somaxconn").read_text() == "8192\n"


def test_netprof_fix_rollback_is_one_line_on_a_corrupt_journal(tmp_path):
    journal_dir = tmp_path / "journal"
    journal_dir.mkdir(mode=0o700)
    (journal_dir / "fix-journal.json").write_text("[" * 100_000)
    os.chmod(journal_dir / "fix-journal.json", 0o600)
    result = subprocess.run([str(NETPROF), "fix", "--rollback", "--journal-dir", str(journal_dir)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "unreadable or corrupt" in result.stderr
