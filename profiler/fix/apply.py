"""Apply node-scope fixes, and undo them: the engine behind `netprof fix --apply` / `--rollback`.

The tool runs as root on production nodes, so every write follows the same discipline:

1. Precheck, all or nothing: privileges, the plan's boot and kernel are this node's, every
   target is on the allow-list and resolves inside /proc or /sys, every current value equals
   what the plan saw. One failure anywhere and nothing at all is written.
2. Journal, then write: the previous value goes to the journal (JSON, fsync'd, renamed into
   place) before the kernel value is touched, so a crash between the two still leaves a
   journal that `rollback()` can restore from.
3. Verify: every write is read back and compared by meaning (CPU masks may come back with
   other zero-padding, sysctls with other whitespace). A write that fails stops the apply and
   the writes this apply already made are undone.

Where a value lives depends on the network namespace that looks at it:
- /proc/sys/net answers for the netns of the *thread* that opens it, so sysctls of a pod are
  read and written from a thread that setns'd into the pod (profiler.system.netns).
- /sys/class/net answers for the netns of whoever *mounted* that sysfs, not of the thread: in
  a setns'd thread the process's /sys still lists the node's devices, and a pod's "eth0"
  there is the node's eth0. So queue files are reached through a fresh sysfs instance created
  by the setns'd thread: a detached mount (fsopen/fsmount, Linux 5.2) that no mount table
  ever shows and that vanishes with its file descriptor; where those syscalls are missing,
  the thread unshares its mount namespace and mounts sysfs over its private /sys, which is
  what `ip netns exec` does for a whole process.
"""
from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..analysis.findings import Change, Fix
from ..errors import NetprofError
from ..system.cpus import read_cpus_online
from .identity import FixError, PlanIdentity, current_identity, missing_privilege
from .journal import (
    DEFAULT_JOURNAL_DIR,
    JOURNAL_NAME,
    check_trusted,
    entry_change,
    journal_for_apply,
    journal_lock,
    load_journal,
    prepare_dir,
    save_journal,
)
from .netns_files import at_target, error_text, is_live, netns_inode_of, read_for_check, read_value, write_value
from .targets import canonical, check_value, Refused, same_in_form, Target, target_of, Unavailable, describe


# --------------------------------------------------------------------------- public data


@dataclass(frozen=True)
class WriteResult:
    """One write and what reading it back showed.

    previous: the value before the write; written: the value read back after it (for a dry
    run: the value that would be written); verified: the read-back means the value asked for.
    """

    change: Change
    previous: str
    written: str
    verified: bool
    error: str | None


@dataclass(frozen=True)
class ApplyReport:
    """What apply_changes() or rollback() did.

    applied: every write attempted (or, dry run, planned), in order, success or not.
    refused: why a change could not be made; for apply, any refusal means nothing was written.
    skipped: rollback entries with nothing to restore (their netns is gone, and the value with it).
    unrestorable: rollback entries that could not even be tried (a malformed journaled value, a
    netns that cannot be reached): left open in the journal, and the rollback is not ok.
    rolled_back: restores made because a write of this apply failed midway.
    """

    applied: tuple[WriteResult, ...]
    refused: tuple[tuple[Change, str], ...]
    journal_path: Path
    skipped: tuple[tuple[Change, str], ...] = ()
    unrestorable: tuple[tuple[Change, str], ...] = ()
    rolled_back: tuple[WriteResult, ...] = ()
    note: str = ""
    dry_run: bool = False
    operation: Literal["apply", "rollback"] = "apply"
    apply_id: str = ""   # the journal's name for this apply's entries (an apply that wrote)

    @property
    def ok(self) -> bool:
        """Nothing refused, and every write verified with nothing undone (dry run: nothing refused)."""
        if self.dry_run:
            return not self.refused
        return (not self.refused and not self.unrestorable
                and all(r.verified and r.error is None for r in (*self.applied, *self.rolled_back))
                and not self.rolled_back)


# --------------------------------------------------------------------------- precheck


@dataclass(frozen=True)
class _Planned:
    change: Change
    target: Target
    current: str
    netns_inode: int | None


def _flatten(items: Sequence[Change | Fix]) -> tuple[list[Change], list[tuple[Change, str]]]:
    changes: list[Change] = []
    refused: list[tuple[Change, str]] = []
    for item in items:
        if isinstance(item, Fix):
            if item.scope == "node":
                changes.extend(item.changes)
            else:
                refused.extend(
                    (change, f"{item.scope}-scope fix ({item.title}): printed as a snippet, never applied")
                    for change in item.changes)
        else:
            changes.append(item)
    return changes, refused


def _privilege_problem(root: Path) -> str | None:
    # A fake tree (unit tests, recorded nodes) is written with ordinary file permissions.
    return missing_privilege() if is_live(root) else None


def _identity_problem(plan: PlanIdentity, current: PlanIdentity, what: str = "the plan was made") -> str | None:
    if plan.boot_id != current.boot_id or plan.kernel_release != current.kernel_release:
        return (f"{what} on {plan.hostname} during boot {plan.boot_id} (kernel {plan.kernel_release}); "
                f"this is {current.hostname}, boot {current.boot_id} (kernel {current.kernel_release}): "
                "values from another boot mean nothing here, re-plan with `netprof fix`")
    return None


def _precheck(items: Sequence[Change | Fix], plan_identity: PlanIdentity,
              root: Path) -> tuple[list[_Planned], list[tuple[Change, str]]]:
    changes, refused = _flatten(items)
    privilege = _privilege_problem(root)
    identity = _identity_problem(plan_identity, current_identity(root))
    for reason in (privilege, identity):
        if reason:
            refused.extend((change, reason) for change in changes)

    online = read_cpus_online(root)
    candidates: list[tuple[Change, Target, int | None]] = []
    seen: dict[tuple[str, str, int | str | None], Change] = {}
    for change in changes:
        try:
            target = target_of(change)
            check_value(target, change.value)
            if target.is_cpu_set and online:
                offline = canonical(target.form, change.value) - online
                if offline:
                    raise Refused(f"CPU(s) {sorted(offline)} are not online here")
            inode = None if privilege else netns_inode_of(target.netns, root)
        except Refused as exc:
            refused.append((change, str(exc)))
            continue
        where = (target.area, target.relpath, inode if inode is not None else target.netns)
        if where in seen:
            if not same_in_form(target.form, seen[where].value, change.value):
                refused.append((change, f"conflicts with another change of the same setting "
                                        f"({seen[where].value!r} vs {change.value!r})"))
            continue
        seen[where] = change
        candidates.append((change, target, inode))

    planned: list[_Planned] = []
    if privilege:
        return planned, refused  # without privileges, reading inside other netns fails anyway
    for change, target, inode in candidates:
        try:
            current, writable = at_target(target, root, read_for_check, inode)
        except (Unavailable, OSError, NetprofError) as exc:
            refused.append((change, f"cannot read it: {error_text(exc)}"))
            continue
        if not writable:
            refused.append((change, "read-only here (in a pod netns, a node-global sysctl is read-only "
                                    "or absent: set it on the node instead)"))
        if change.expected_current is not None and not same_in_form(target.form, current, change.expected_current):
            refused.append((change, f"changed since the plan: the plan saw {change.expected_current!r}, "
                                    f"now {current!r}"))
        planned.append(_Planned(change, target, current, inode))
    return planned, refused


def check_plan(changes: Sequence[Change | Fix], plan_identity: PlanIdentity,
               root: Path = Path("/")) -> list[tuple[Change, str]]:
    """Every reason a change of the plan cannot be applied now (empty: all can).

    Reasons: not root, the plan is from another boot or kernel, a target not on the
    allow-list or resolving outside /proc or /sys, a netns that is gone, a value that
    changed since the plan, a read-only setting, conflicting changes, pod/app-scope fixes.
    A change may be listed once per reason.
    """
    return _precheck(changes, plan_identity, root)[1]


# --------------------------------------------------------------------------- writing


def _write_verified(change: Change, target: Target, expected_now: str, value: str,
                    netns_inode: int | None, root: Path) -> WriteResult:
    """Write `value` if the target still holds `expected_now`, read it back, compare."""

    def write_and_read(path: Path) -> WriteResult:
        now = read_value(path)
        if not same_in_form(target.form, now, expected_now):
            return WriteResult(change, now, now, False,
                               f"changed by someone else since the check: expected {expected_now!r}, found {now!r}; not written")
        try:
            write_value(path, value)
        except OSError as exc:
            after = read_value(path)
            return WriteResult(change, now, after, False, f"the kernel refused {value!r}: {error_text(exc)}")
        after = read_value(path)
        if not same_in_form(target.form, after, value):
            return WriteResult(change, now, after, False, f"wrote {value!r} but it reads back as {after!r}")
        return WriteResult(change, now, after, True, None)

    try:
        return at_target(target, root, write_and_read, netns_inode)
    except (Unavailable, OSError, NetprofError) as exc:
        return WriteResult(change, expected_now, "", False, error_text(exc))


class _Unrestorable(Exception):
    """A journal entry that cannot be restored now; it stays open for the next rollback."""


def _check_restorable(target: Target, change: Change, previous: str) -> None:
    """The journaled previous value must be one the kernel could have shown for this target.

    The journal is root's own file, but rollback writes its values into the kernel, so it is
    read as untrusted: a value with a line break (`4096\nkernel.x=1`), or of another shape than
    the value netprof wrote over it, is not written back.
    """
    try:
        # Tabs are how the kernel separates the fields of multi-value sysctls (tcp_rmem).
        check_value(target, previous.replace("\t", " "))
    except Refused as exc:
        raise _Unrestorable(f"the journaled previous value is malformed: {exc}") from None
    if target.form == "text" and _value_shape(previous) != _value_shape(change.value):
        raise _Unrestorable(f"the journaled previous value {previous[:40]!r} is not shaped like the "
                            f"{change.value[:40]!r} netprof wrote over it")


def _value_shape(text: str) -> tuple[str, ...]:
    """A sysctl value's shape: how many fields, each a decimal integer or a word."""
    return tuple("integer" if re.fullmatch(r"-?[0-9]{1,20}", field) else "word" for field in text.split())


def _restore(entry: dict[str, Any], root: Path, force: bool = False) -> tuple[WriteResult | None, str | None]:
    """Put one journal entry's previous value back. (result, None) or (None, why it was skipped).

    Marks the entry restored or gone; leaves it open when the restore failed or was refused.
    _Unrestorable: the entry cannot be restored now (malformed value, unreachable netns).
    """
    change = entry_change(entry)
    previous = entry["previous"]
    target = target_of(change)
    _check_restorable(target, change, previous)
    undo = Change(change.kind, change.key, previous, change.netns, expected_current=change.value)
    inode = entry.get("netns_inode")
    if is_live(root) and target.netns is not None:
        try:
            found = os.stat(target.netns).st_ino
        except FileNotFoundError:
            found = None
        except OSError as exc:
            raise _Unrestorable(f"cannot reach netns {target.netns}: {error_text(exc)}") from None
        if found is None or (inode is not None and found != inode):
            entry["state"] = "gone"
            return None, f"netns {target.netns} is gone (or is another one now): the value went with it"

    def restore_at(path: Path) -> WriteResult:
        now = read_value(path)
        if same_in_form(target.form, now, previous):
            # Nothing to do: the write never happened (a crash between journal and write, or
            # the write failed) or someone already put it back.
            return WriteResult(undo, now, now, True, None)
        if not same_in_form(target.form, now, change.value) and not force:
            return WriteResult(undo, now, now, False,
                               f"changed by someone else since the apply: netprof wrote {change.value!r}, "
                               f"now {now!r}; not restored to {previous!r} (rollback with force to overwrite)")
        try:
            write_value(path, previous)
        except OSError as exc:
            return WriteResult(undo, now, read_value(path), False, f"the kernel refused {previous!r}: {error_text(exc)}")
        after = read_value(path)
        if not same_in_form(target.form, after, previous):
            return WriteResult(undo, now, after, False, f"wrote {previous!r} but it reads back as {after!r}")
        return WriteResult(undo, now, after, True, None)

    try:
        result = at_target(target, root, restore_at, inode if is_live(root) else None)
    except (Unavailable, OSError, NetprofError) as exc:
        result = WriteResult(undo, "", "", False, error_text(exc))
    if result.verified:
        entry["state"] = "restored"
        entry["restored_at"] = time.time()
    return result, None


def apply_changes(changes: Sequence[Change | Fix], plan_identity: PlanIdentity,
                  journal_dir: Path = DEFAULT_JOURNAL_DIR, dry_run: bool = False,
                  *, root: Path = Path("/")) -> ApplyReport:
    """Apply node-scope changes, all prechecked, each journaled before it is written.

    `changes` are Changes (the caller picked node-scope fixes: see node_scope_changes) or
    Fixes, whose pod- and app-scope ones are refused. Any refusal: nothing is written.
    Changes already at their value are reported verified and not written. dry_run: the
    precheck only; `applied` then lists what would be written (`written` = the new value).
    `root` is for fake trees in tests; netns changes need the live root.
    """
    journal_path = Path(journal_dir) / JOURNAL_NAME
    planned, refused = _precheck(changes, plan_identity, root)
    if refused:
        return ApplyReport((), tuple(refused), journal_path, note="nothing was written", dry_run=dry_run)
    position = {id(p.change): index for index, p in enumerate(planned)}

    def in_plan_order(results: list[WriteResult]) -> tuple[WriteResult, ...]:
        return tuple(sorted(results, key=lambda result: position[id(result.change)]))

    already = [WriteResult(p.change, p.current, p.current, True, None)
               for p in planned if same_in_form(p.target.form, p.current, p.change.value)]
    to_write = [p for p in planned if not same_in_form(p.target.form, p.current, p.change.value)]
    if dry_run:
        would = [WriteResult(p.change, p.current, p.change.value, False, None) for p in to_write]
        return ApplyReport(in_plan_order(would + already), (), journal_path, note="dry run: nothing was written",
                           dry_run=True)
    if not to_write:
        return ApplyReport(tuple(already), (), journal_path, note="every value is already set")

    journal_dir = Path(journal_dir)
    prepare_dir(journal_dir)
    with journal_lock(journal_dir):
        journal = journal_for_apply(journal_dir, current_identity(root))
        apply_id = f"{time.strftime('%Y%m%dT%H%M%S')}-{secrets.token_hex(3)}"
        results: list[WriteResult] = []
        made: list[dict[str, Any]] = []
        for item in to_write:
            entry = {
                "apply_id": apply_id, "journaled_at": time.time(), "change": item.change.to_json(),
                "netns_inode": item.netns_inode, "previous": item.current, "state": "open",
            }
            journal["entries"].append(entry)
            try:
                save_journal(journal_path, journal)
            except FixError as exc:
                # Not journaled, so not written; undo what was.
                journal["entries"].remove(entry)
                return _stop_and_undo(journal, journal_path, made, in_plan_order(already + results), root,
                                      f"{exc}; stopped before writing {describe(item.change)}")
            made.append(entry)
            result = _write_verified(item.change, item.target, item.current, item.change.value,
                                     item.netns_inode, root)
            results.append(result)
            if not result.verified:
                return _stop_and_undo(journal, journal_path, made, in_plan_order(already + results), root,
                                      f"write {len(results)} of {len(to_write)} failed; stopped")
    return ApplyReport(in_plan_order(already + results), (), journal_path, apply_id=apply_id)


def _stop_and_undo(journal: dict[str, Any], journal_path: Path, made: list[dict[str, Any]],
                   results: tuple[WriteResult, ...], root: Path, why: str) -> ApplyReport:
    """Undo this apply's writes, newest first, after one of them failed."""
    undone: list[WriteResult] = []
    for entry in reversed(made):
        # force: these values are this apply's own, from moments ago -- including the failed
        # write's, which may read back as neither the old nor the asked-for value.
        try:
            restored, _ = _restore(entry, root, force=True)
        except _Unrestorable as exc:
            restored = WriteResult(entry_change(entry), entry["previous"], "", False, str(exc))
        if restored is not None:
            undone.append(restored)
        try:
            save_journal(journal_path, journal)
        except FixError:
            pass  # restores are idempotent: a stale "open" entry is a no-op for rollback
    complete = all(result.verified for result in undone)
    note = f"{why} and undid this apply's writes" + (
        "" if complete else "; some could not be undone: run `netprof fix --rollback`")
    return ApplyReport(results, (), journal_path, rolled_back=tuple(undone), note=note)


def rollback(journal_dir: Path = DEFAULT_JOURNAL_DIR, *, root: Path = Path("/"),
             force: bool = False, allowed_sysctls: frozenset[str] | None = None,
             apply_id: str | None = None, only: Callable[[Change], bool] | None = None) -> ApplyReport:
    """Restore every value the applies since the last rollback journaled, newest first.

    Each restore is read back. Refused as a whole when the journal is from another boot or
    kernel, without privileges, or when an entry's target is not allowed (any net.* sysctl,
    or only `allowed_sysctls` when given). A value someone else changed after the apply is
    left alone (refused) unless force. Entries whose netns is gone are skipped. Entries whose
    journaled value is malformed or whose netns cannot be reached are reported in
    `unrestorable` and the others restored. Entries not restored stay in the journal for the
    next rollback; rolling back twice does nothing the second time. `apply_id` and `only`
    narrow it to one apply's entries and to the changes `only` accepts (what `fix --verify`
    rolls back: the fixes that did not help).
    """
    journal_dir = Path(journal_dir)
    journal_path = journal_dir / JOURNAL_NAME
    if not journal_path.exists() and not journal_path.is_symlink():
        return ApplyReport((), (), journal_path, note=f"no fix journal at {journal_path}: nothing to roll back",
                           operation="rollback")
    check_trusted(journal_dir, want_dir=True)
    with journal_lock(journal_dir):
        journal = load_journal(journal_path)
        assert journal is not None
        open_entries = [entry for entry in journal["entries"] if entry["state"] == "open"
                        and (apply_id is None or entry.get("apply_id") == apply_id)
                        and (only is None or only(entry_change(entry)))]
        if not open_entries:
            return ApplyReport((), (), journal_path, operation="rollback",
                               note="nothing to roll back: the last apply was already rolled back")
        changes = [entry_change(entry) for entry in open_entries]
        problem = _privilege_problem(root) or _identity_problem(
            PlanIdentity.from_json(journal["identity"]), current_identity(root), "the journal was written")
        if problem:
            return ApplyReport((), tuple((change, problem) for change in changes), journal_path,
                               note="nothing was restored", operation="rollback")
        refused: list[tuple[Change, str]] = []
        for entry, change in zip(open_entries, changes):
            try:
                target_of(change)
                if allowed_sysctls is not None and change.kind == "sysctl" and change.key not in allowed_sysctls:
                    raise Refused(f"{change.key!r} is not a sysctl netprof's fixes change")
            except Refused as exc:
                refused.append((change, f"journal entry not allowed: {exc}"))
        if refused:
            return ApplyReport((), tuple(refused), journal_path, note="nothing was restored", operation="rollback")

        restored: list[WriteResult] = []
        skipped: list[tuple[Change, str]] = []
        unrestorable: list[tuple[Change, str]] = []
        for entry, change in reversed(list(zip(open_entries, changes))):
            try:
                result, why_skipped = _restore(entry, root, force=force)
            except _Unrestorable as exc:
                unrestorable.append((change, str(exc)))
                continue
            if result is not None:
                restored.append(result)
            else:
                skipped.append((change, why_skipped or ""))
            save_journal(journal_path, journal)
        left = [describe(entry_change(entry)) for entry in journal["entries"] if entry["state"] == "open"]
        note = "" if not left else (f"{len(left)} value(s) not restored ({', '.join(left)}); "
                                    "they stay in the journal for the next rollback")
        return ApplyReport(tuple(restored), (), journal_path, skipped=tuple(skipped),
                           unrestorable=tuple(unrestorable), note=note, operation="rollback")


# --------------------------------------------------------------------------- for the CLI


def format_report(report: ApplyReport) -> list[str]:
    """The report as lines for a terminal; a reason shared by every refused change is one line."""
    lines: list[str] = []
    refused_changes = {id(change) for change, _ in report.refused}
    by_reason: dict[str, list[Change]] = {}
    for change, reason in report.refused:
        by_reason.setdefault(reason, []).append(change)
    for reason, changes in by_reason.items():
        if len(refused_changes) > 1 and len({id(c) for c in changes}) == len(refused_changes):
            lines.append(f"refused: {reason}")
        else:
            lines.extend(f"refused {describe(change)}: {reason}" for change in changes)
    for result in report.applied:
        if report.dry_run:
            if result.verified:
                lines.append(f"already set {describe(result.change)}: {result.previous}")
            else:
                lines.append(f"would set {describe(result.change)}: {result.previous} -> {result.written}")
        elif result.error:
            lines.append(f"FAILED {describe(result.change)}: {result.error}")
        elif report.operation == "rollback" and result.previous == result.written:
            lines.append(f"already as before {describe(result.change)}: {result.written}")
        elif result.previous == result.written:
            lines.append(f"already set {describe(result.change)}: {result.written}")
        else:
            verb = "restored" if report.operation == "rollback" else "set"
            lines.append(f"{verb} {describe(result.change)}: {result.previous} -> {result.written} (read back)")
    for result in report.rolled_back:
        state = "undone" if result.verified else f"NOT undone: {result.error}"
        lines.append(f"{state} {describe(result.change)}: {result.written or result.previous}")
    lines.extend(f"skipped {describe(change)}: {reason}" for change, reason in report.skipped)
    lines.extend(f"NOT restored {describe(change)}: {reason}" for change, reason in report.unrestorable)
    if report.note:
        lines.append(report.note)
    return lines
