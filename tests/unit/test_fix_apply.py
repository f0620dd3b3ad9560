"""The fix engine on fake /proc + /sys trees: what is allowed, what is refused, the journal."""
from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

import pytest

from profiler.analysis.findings import Change, Fix
from profiler.fix import apply as fix_apply
from profiler.fix import (
    JOURNAL_FORMAT,
    FixError,
    PlanIdentity,
    apply_changes,
    check_plan,
    current_identity,
    format_report,
    missing_privilege,
    node_scope_changes,
    rollback,
    same_value,
)

BOOT = "0d9c2a1e-5b1c-4a8e-9d3f-7f0b6c1e2a44"
KERNEL = "6.18.44-test"

SOMAXCONN = Change("sysctl", "net.core.somaxconn", "8192", expected_current="4096")
RMEM = Change("sysctl", "net.ipv4.tcp_rmem", "4096 262144 6291456", expected_current="4096 131072 6291456")
IRQ_LIST = Change("file", "/proc/irq/24/smp_affinity_list", "2-3", expected_current="0-1")
IRQ_MASK = Change("file", "/proc/irq/25/smp_affinity", "4", expected_current="00000003")
RPS = Change("file", "/sys/class/net/eth0/queues/rx-0/rps_cpus", "3", expected_current="0")
RPS_FLOWS = Change("file", "/sys/class/net/eth0/queues/rx-0/rps_flow_cnt", "4096", expected_current="0")
XPS = Change("file", "/sys/class/net/eth0/queues/tx-0/xps_cpus", "c", expected_current="00000000")
ALL = [SOMAXCONN, RMEM, IRQ_LIST, IRQ_MASK, RPS, RPS_FLOWS, XPS]


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def node(tmp_path: Path) -> Path:
    """A 4-CPU node: sysctls, two IRQs, one veth-like device with one rx and one tx queue."""
    root = tmp_path / "node"
    _write(root / "proc/sys/kernel/osrelease", f"{KERNEL}\n")
    _write(root / "proc/sys/kernel/random/boot_id", f"{BOOT}\n")
    _write(root / "proc/sys/kernel/hostname", "worker-1\n")
    _write(root / "proc/sys/net/core/somaxconn", "4096\n")
    _write(root / "proc/sys/net/ipv4/tcp_rmem", "4096\t131072\t6291456\n")
    _write(root / "proc/irq/24/smp_affinity_list", "0-1\n")
    _write(root / "proc/irq/25/smp_affinity", "3\n")
    _write(root / "sys/devices/system/cpu/online", "0-3\n")
    queues = root / "sys/devices/virtual/net/eth0/queues"
    _write(queues / "rx-0/rps_cpus", "0\n")
    _write(queues / "rx-0/rps_flow_cnt", "0\n")
    _write(queues / "tx-0/xps_cpus", "0\n")
    (root / "sys/class/net").mkdir(parents=True)
    (root / "sys/class/net/eth0").symlink_to("../../devices/virtual/net/eth0")
    return root


@pytest.fixture
def identity(node: Path) -> PlanIdentity:
    return current_identity(node)


@pytest.fixture
def journal_dir(tmp_path: Path) -> Path:
    return tmp_path / "journal"


def _values(root: Path) -> dict[str, str]:
    return {
        str(path.relative_to(root)): path.read_text()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def _reasons(refused) -> list[str]:
    return [reason for _, reason in refused]


# ---------------------------------------------------------------- identity and privilege


def test_current_identity_reads_kernel_boot_and_host(node):
    assert current_identity(node) == PlanIdentity(KERNEL, BOOT, "worker-1")


@pytest.mark.parametrize("field, value", [("boot_id", "11111111-2222-3333-4444-555555555555"),
                                          ("kernel_release", "6.1.0-old")])
def test_plan_from_another_boot_or_kernel_is_refused_and_nothing_written(node, identity, journal_dir, field, value):
    other = PlanIdentity(**{**identity.to_json(), field: value})
    before = _values(node)
    report = apply_changes(ALL, other, journal_dir, root=node)
    assert not report.applied
    assert len(report.refused) == len(ALL)
    assert all("another boot" in reason and value in reason for reason in _reasons(report.refused))
    assert _values(node) == before
    assert not journal_dir.exists()
    # Shared by every change, so the operator reads it once.
    assert format_report(report)[0].startswith("refused: the plan was made on worker-1")
    assert len(format_report(report)) == 2


def test_missing_privilege():
    assert "not root (euid 1000)" in missing_privilege("CapEff:\t000001ffffffffff\n", euid=1000)
    assert missing_privilege("CapEff:\t000001ffffffffff\n", euid=0) is None
    no_sys_admin = f"{0x1ffffffffff & ~(1 << 21):016x}"
    assert "CAP_SYS_ADMIN" in missing_privilege(f"CapEff:\t{no_sys_admin}\n", euid=0)
    assert "CAP_NET_ADMIN, CAP_SYS_ADMIN" in missing_privilege("CapEff:\t0000000000000000\n", euid=0)


# ---------------------------------------------------------------- allowed targets


def test_every_allowed_kind_of_target_passes_the_check(node, identity):
    assert check_plan(ALL, identity, root=node) == []


@pytest.mark.parametrize(
    "change, reason",
    [
        (Change("sysctl", "kernel.panic", "1"), "not under net."),
        (Change("sysctl", "vm.swappiness", "1"), "not under net."),
        (Change("sysctl", "net..core", "1"), "not under net."),
        (Change("sysctl", "net/../kernel/panic", "1"), ". or .."),
        (Change("sysctl", "net.core.somaxconn/../../kernel/panic", "1"), "not under net."),
        (Change("file", "/etc/sysctl.conf", "x"), "not an allowed target"),
        (Change("file", "/proc/sys/net/core/somaxconn", "1"), "not an allowed target"),
        (Change("file", "/proc/irq/24/../../sys/kernel/panic", "1"), "not an allowed target"),
        (Change("file", "/proc/irq/24/node", "1"), "not an allowed target"),
        (Change("file", "/sys/class/net/eth0/queues/rx-0/xps_cpus", "1"), "belongs to tx queues"),
        (Change("file", "/sys/class/net/eth0/queues/tx-0/rps_cpus", "1"), "belongs to rx queues"),
        (Change("file", "/sys/class/net/eth0/mtu", "9000"), "not an allowed target"),
        (Change("file", "/sys/class/net/../queues/rx-0/rps_cpus", "1"), "bad interface name"),
        (Change("file", "/proc/irq/24/smp_affinity_list", "1", netns="/run/netns/x"), "IRQs belong to the node"),
        (Change("sysctl", "net.core.somaxconn", "1", netns="/tmp/ns"), "is not /run/netns"),
        (Change("sysctl", "net.core.somaxconn", "1", netns="/run/netns/../../etc/x"), "is not /run/netns"),
        (Change("sysctl", "net.core.somaxconn", "1", netns="/run/netns/web"), "only be checked on the live node"),
        (Change("mount", "/", "x"), "unknown change kind"),
    ],
)
def test_targets_outside_the_allow_list_are_refused(node, identity, change, reason):
    refused = check_plan([change], identity, root=node)
    assert refused and all(c is change for c, _ in refused)
    assert any(reason in text for text in _reasons(refused)), refused


@pytest.mark.parametrize(
    "change, reason",
    [
        (Change("file", "/proc/irq/24/smp_affinity_list", "0-7"), "[4, 5, 6, 7] are not online"),
        (Change("file", "/proc/irq/24/smp_affinity_list", "0-"), "not a valid cpu list"),
        (Change("file", "/proc/irq/25/smp_affinity", "0"), "at least one CPU"),
        (Change("file", "/sys/class/net/eth0/queues/rx-0/rps_cpus", "0x3"), "not a valid cpu mask"),
        (Change("file", "/sys/class/net/eth0/queues/rx-0/rps_flow_cnt", "-1"), "not a valid count"),
        (Change("sysctl", "net.core.somaxconn", "1\n2"), "single printable line"),
        (Change("sysctl", "net.core.somaxconn", " "), "empty value"),
    ],
)
def test_bad_values_are_refused(node, identity, change, reason):
    assert any(reason in text for text in _reasons(check_plan([change], identity, root=node)))


def test_links_leading_out_of_sys_or_to_another_device_are_refused(node, identity):
    net = node / "sys/class/net"
    (net / "outside").symlink_to("../../../../../../../../etc")
    (net / "absolute").symlink_to("/etc")
    # A device whose link lands on eth0's queues: the file must be under the device it names.
    (net / "sneaky").symlink_to("../../devices/virtual/net/eth0")
    # A sysctl that is a link to a non-net setting.
    (node / "proc/sys/net/core/linked").symlink_to("../../kernel/osrelease")
    changes = [Change("file", f"/sys/class/net/{dev}/queues/rx-0/rps_cpus", "1") for dev in ("outside", "absolute", "sneaky")]
    changes.append(Change("sysctl", "net.core.linked", "1"))
    refused = check_plan(changes, identity, root=node)
    by_change = {change.key: reason for change, reason in refused}
    assert len(by_change) == 4
    assert "not found" in by_change[changes[0].key]
    assert "not found" in by_change[changes[1].key]
    assert "resolves to /sys/devices/virtual/net/eth0/queues/rx-0/rps_cpus" in by_change[changes[2].key]
    assert "resolves to /proc/sys/kernel/osrelease" in by_change["net.core.linked"]


def test_missing_setting_is_refused(node, identity):
    refused = check_plan([Change("sysctl", "net.core.no_such_thing", "1")], identity, root=node)
    assert "cannot read it" in refused[0][1]


def test_pod_and_app_scope_fixes_are_refused_node_scope_ones_pass(node, identity):
    node_fix = Fix("node", "deeper accept queue", "why", changes=(SOMAXCONN,))
    pod_change = Change("sysctl", "net.ipv4.tcp_max_syn_backlog", "4096")
    pod_fix = Fix("pod", "pod sysctl", "why", changes=(pod_change,), snippet="sysctls: …")
    app_fix = Fix("app", "bigger backlog", "why", snippet="listen(fd, 4096)")
    assert node_scope_changes([node_fix, pod_fix, app_fix]) == (SOMAXCONN,)
    assert check_plan([node_fix, app_fix], identity, root=node) == []
    refused = check_plan([node_fix, pod_fix], identity, root=node)
    assert refused == [(pod_change, "pod-scope fix (pod sysctl): printed as a snippet, never applied")]


def test_conflicting_changes_of_one_setting_are_refused_duplicates_are_not(node, identity):
    same = Change("file", RPS.key, "00000003")
    assert check_plan([RPS, same], identity, root=node) == []
    other = Change("file", RPS.key, "1")
    refused = check_plan([RPS, other], identity, root=node)
    assert refused == [(other, "conflicts with another change of the same setting ('3' vs '1')")]


# ---------------------------------------------------------------- expected values


def test_changed_since_the_plan_refuses_everything_and_writes_nothing(node, identity, journal_dir):
    (node / "proc/sys/net/core/somaxconn").write_text("1024\n")
    before = _values(node)
    report = apply_changes(ALL, identity, journal_dir, root=node)
    assert report.applied == ()
    assert report.refused == ((SOMAXCONN, "changed since the plan: the plan saw '4096', now '1024'"),)
    assert _values(node) == before
    assert not journal_dir.exists()


@pytest.mark.parametrize(
    "change, a, b, same",
    [
        (RPS, "00000003", "3", True),
        (RPS, "ff,00000001", "000000ff,00000001", True),
        (RPS, "00000000,00000000", "0", True),
        (RPS, "3", "2", False),
        (RPS, "3", "garbage", False),
        (IRQ_LIST, "0-1", "0,1", True),
        (IRQ_LIST, "0-3", "0,1,2", False),
        (RMEM, "4096\t131072\t6291456", "4096 131072  6291456", True),
        (RMEM, "4096 131072", "4096 131073", False),
        (RPS_FLOWS, "0100", "100", True),
    ],
)
def test_values_compare_by_meaning(change, a, b, same):
    assert same_value(change, a, b) is same


def test_expected_current_compares_by_meaning(node, identity):
    padded = Change("file", RPS.key, "3", expected_current="00000000")
    tabbed = Change("sysctl", RMEM.key, RMEM.value, expected_current="4096 131072 6291456")
    assert check_plan([padded, tabbed], identity, root=node) == []


# ---------------------------------------------------------------- apply, journal, rollback


def test_apply_journals_writes_verifies_and_rollback_restores(node, identity, journal_dir):
    before = _values(node)
    report = apply_changes(ALL, identity, journal_dir, root=node)
    assert report.ok and not report.refused
    assert [r.change for r in report.applied] == ALL
    assert all(r.verified and r.error is None for r in report.applied)
    assert (node / "proc/sys/net/core/somaxconn").read_text() == "8192\n"
    assert (node / "sys/devices/virtual/net/eth0/queues/rx-0/rps_cpus").read_text() == "3\n"
    assert report.applied[0].previous == "4096" and report.applied[0].written == "8192"

    journal_path = journal_dir / "fix-journal.json"
    assert report.journal_path == journal_path
    assert stat.S_IMODE(journal_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(journal_dir.stat().st_mode) == 0o700
    journal = json.loads(journal_path.read_text())
    assert journal["format"] == JOURNAL_FORMAT
    assert journal["identity"] == identity.to_json()
    assert [entry["change"] for entry in journal["entries"]] == [c.to_json() for c in ALL]
    assert [entry["previous"] for entry in journal["entries"]] == [
        "4096", "4096\t131072\t6291456", "0-1", "3", "0", "0", "0"]
    assert {entry["state"] for entry in journal["entries"]} == {"open"}
    assert len({entry["apply_id"] for entry in journal["entries"]}) == 1

    undo = rollback(journal_dir, root=node)
    assert undo.ok and undo.operation == "rollback"
    # Newest first.
    assert [r.change.key for r in undo.applied] == [c.key for c in reversed(ALL)]
    assert all(r.verified for r in undo.applied)
    assert _values(node) == before
    journal = json.loads(journal_path.read_text())
    assert {entry["state"] for entry in journal["entries"]} == {"restored"}

    again = rollback(journal_dir, root=node)
    assert again.applied == () and again.refused == ()
    assert "already rolled back" in again.note
    assert _values(node) == before


def test_dry_run_and_already_set_write_nothing(node, identity, journal_dir):
    before = _values(node)
    report = apply_changes([SOMAXCONN, RPS], identity, journal_dir, dry_run=True, root=node)
    assert report.dry_run and report.ok
    assert [(r.previous, r.written, r.verified) for r in report.applied] == [("4096", "8192", False), ("0", "3", False)]
    assert format_report(report)[0] == "would set net.core.somaxconn: 4096 -> 8192"
    assert _values(node) == before and not journal_dir.exists()

    already = apply_changes([Change("sysctl", "net.core.somaxconn", "4096")], identity, journal_dir, root=node)
    assert already.ok and already.applied[0].previous == already.applied[0].written == "4096"
    assert not journal_dir.exists()


def test_rollback_without_a_journal_is_a_no_op(journal_dir, node):
    report = rollback(journal_dir, root=node)
    assert report.applied == () and report.refused == () and "nothing to roll back" in report.note


def test_applies_accumulate_and_rollback_returns_to_before_the_first(node, identity, journal_dir):
    before = _values(node)
    assert apply_changes([SOMAXCONN, RPS], identity, journal_dir, root=node).ok
    second = [Change("sysctl", "net.core.somaxconn", "16384", expected_current="8192"), XPS]
    assert apply_changes(second, identity, journal_dir, root=node).ok
    assert (node / "proc/sys/net/core/somaxconn").read_text() == "16384\n"
    journal = json.loads((journal_dir / "fix-journal.json").read_text())
    assert len(journal["entries"]) == 4 and len({e["apply_id"] for e in journal["entries"]}) == 2
    assert rollback(journal_dir, root=node).ok
    assert _values(node) == before


class SimulatedCrash(BaseException):
    """Stands for the process dying: nothing after it runs, no except-Exception catches it."""


def test_crash_between_journal_and_write_still_rolls_back(node, identity, journal_dir, monkeypatch):
    before = _values(node)
    real_write = fix_apply.write_value
    calls = []

    def crash_on_second(path, value):
        calls.append(path)
        if len(calls) == 2:
            raise SimulatedCrash
        real_write(path, value)

    monkeypatch.setattr(fix_apply, "write_value", crash_on_second)
    with pytest.raises(SimulatedCrash):
        apply_changes([SOMAXCONN, RPS, XPS], identity, journal_dir, root=node)
    monkeypatch.setattr(fix_apply, "write_value", real_write)
    journal = json.loads((journal_dir / "fix-journal.json").read_text())
    # The second change was journaled before its write was attempted; the third never was.
    assert [e["change"]["key"] for e in journal["entries"]] == [SOMAXCONN.key, RPS.key]
    assert (node / "proc/sys/net/core/somaxconn").read_text() == "8192\n"

    report = rollback(journal_dir, root=node)
    assert report.ok
    # The journaled-but-never-written value is found as before and left alone.
    assert [(r.change.key, r.previous, r.written) for r in report.applied] == [
        (RPS.key, "0", "0"), (SOMAXCONN.key, "8192", "4096")]
    assert _values(node) == before


def test_failed_write_stops_and_undoes_this_applys_writes(node, identity, journal_dir, monkeypatch):
    before = _values(node)
    real_write = fix_apply.write_value

    def refuse_rps(path, value):
        if path.name == "rps_cpus" and value == RPS.value:
            raise OSError(errno.EINVAL, "Invalid argument")
        real_write(path, value)

    monkeypatch.setattr(fix_apply, "write_value", refuse_rps)
    report = apply_changes([SOMAXCONN, RMEM, RPS, XPS], identity, journal_dir, root=node)
    assert not report.ok
    assert [r.verified for r in report.applied] == [True, True, False]  # stopped before XPS
    assert "the kernel refused '3': Invalid argument" in report.applied[2].error
    assert [r.change.key for r in report.rolled_back] == [RPS.key, RMEM.key, SOMAXCONN.key]
    assert all(r.verified for r in report.rolled_back)
    assert "write 3 of 4 failed" in report.note
    assert _values(node) == before
    journal = json.loads((journal_dir / "fix-journal.json").read_text())
    assert {e["state"] for e in journal["entries"]} == {"restored"}
    assert rollback(journal_dir, root=node).applied == ()


def test_a_write_that_reads_back_differently_is_not_verified(node, identity, journal_dir, monkeypatch):
    before = _values(node)
    real_write = fix_apply.write_value

    def clamp(path, value):
        # What the kernel does to a somaxconn above its limit on some versions: keeps another value.
        real_write(path, "65535" if path.name == "somaxconn" and value == "99999999" else value)

    monkeypatch.setattr(fix_apply, "write_value", clamp)
    report = apply_changes([Change("sysctl", "net.core.somaxconn", "99999999")], identity, journal_dir, root=node)
    assert report.applied[0].error == "wrote '99999999' but it reads back as '65535'"
    assert report.rolled_back[0].verified
    assert _values(node) == before


def test_rollback_leaves_values_someone_else_changed_unless_forced(node, identity, journal_dir):
    assert apply_changes([SOMAXCONN, RPS], identity, journal_dir, root=node).ok
    (node / "proc/sys/net/core/somaxconn").write_text("2048\n")
    report = rollback(journal_dir, root=node)
    assert not report.ok
    by_key = {r.change.key: r for r in report.applied}
    assert by_key[RPS.key].verified
    assert "changed by someone else since the apply" in by_key[SOMAXCONN.key].error
    assert (node / "proc/sys/net/core/somaxconn").read_text() == "2048\n"
    assert "1 value(s) not restored" in report.note

    forced = rollback(journal_dir, root=node, force=True)
    assert forced.ok and [r.change.key for r in forced.applied] == [SOMAXCONN.key]
    assert (node / "proc/sys/net/core/somaxconn").read_text() == "4096\n"


def test_rollback_refuses_a_journal_from_another_boot(node, identity, journal_dir):
    assert apply_changes([SOMAXCONN], identity, journal_dir, root=node).ok
    (node / "proc/sys/kernel/random/boot_id").write_text("99999999-0000-0000-0000-000000000000\n")
    (node / "proc/sys/net/core/somaxconn").write_text("4096\n")  # a reboot reset it
    report = rollback(journal_dir, root=node)
    assert report.applied == ()
    assert report.refused and "the journal was written on worker-1 during boot " + BOOT in report.refused[0][1]

    # The next apply (planned on the new boot) sets that journal aside instead of appending.
    new_identity = current_identity(node)
    assert apply_changes([SOMAXCONN], new_identity, journal_dir, root=node).ok
    stale = journal_dir / f"fix-journal.stale-{BOOT[:8]}.json"
    assert json.loads(stale.read_text())["identity"]["boot_id"] == BOOT
    journal = json.loads((journal_dir / "fix-journal.json").read_text())
    assert journal["identity"] == new_identity.to_json() and len(journal["entries"]) == 1


def test_journal_others_could_edit_is_not_trusted(node, identity, journal_dir):
    assert apply_changes([SOMAXCONN], identity, journal_dir, root=node).ok
    journal_path = journal_dir / "fix-journal.json"
    os.chmod(journal_path, 0o666)
    with pytest.raises(FixError, match="only its owner may write the fix journal"):
        rollback(journal_dir, root=node)
    os.chmod(journal_path, 0o600)
    os.chmod(journal_dir, 0o777)
    with pytest.raises(FixError, match="only its owner may write"):
        apply_changes([RPS], identity, journal_dir, root=node)
    os.chmod(journal_dir, 0o700)
    assert rollback(journal_dir, root=node).ok


def test_corrupt_or_tampered_journal_is_refused(node, identity, journal_dir):
    assert apply_changes([SOMAXCONN], identity, journal_dir, root=node).ok
    journal_path = journal_dir / "fix-journal.json"
    good = journal_path.read_text()
    journal_path.write_text(good[: len(good) // 2])
    with pytest.raises(FixError, match="unreadable or corrupt"):
        rollback(journal_dir, root=node)
    # An entry that was never an allowed target is refused, nothing restored.
    journal = json.loads(good)
    journal["entries"].append({**journal["entries"][0], "change": {**journal["entries"][0]["change"],
                                                                   "kind": "sysctl", "key": "kernel.panic"}})
    journal_path.write_text(json.dumps(journal))
    report = rollback(journal_dir, root=node)
    assert report.applied == () and "journal entry not allowed" in report.refused[0][1]
    assert (node / "proc/sys/net/core/somaxconn").read_text() == "8192\n"


def test_format_report_lines(node, identity, journal_dir):
    refused = apply_changes([Change("sysctl", "kernel.panic", "1"), SOMAXCONN], identity, journal_dir, root=node)
    assert format_report(refused) == [
        "refused kernel.panic: sysctl 'kernel.panic' is not under net.: only network sysctls are applied",
        "nothing was written",
    ]
    report = apply_changes([SOMAXCONN], identity, journal_dir, root=node)
    assert format_report(report) == ["set net.core.somaxconn: 4096 -> 8192 (read back)"]
    assert format_report(rollback(journal_dir, root=node)) == ["restored net.core.somaxconn: 8192 -> 4096 (read back)"]
