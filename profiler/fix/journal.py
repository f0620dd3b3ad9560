"""The fix journal: every value an apply overwrote, written (fsync'd, renamed into place)
before the kernel value is touched, so that `rollback()` can restore it even after a crash;
and what `fix --verify` and the TUI read back from it.

The journal's values are written back into the kernel by rollback, so the journal is trusted
only if only its owner could have written it, and read as untrusted all the same.
"""
from __future__ import annotations

import fcntl
import json
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..analysis.findings import Change
from .identity import FixError, PlanIdentity
from .targets import describe

DEFAULT_JOURNAL_DIR = Path("/var/lib/netprof")
JOURNAL_NAME = "fix-journal.json"
JOURNAL_FORMAT = "netprof.fix-journal/v1"
_LOCK_NAME = ".fix-journal.lock"

EntryState = Literal["open", "restored", "gone"]


def check_trusted(path: Path, want_dir: bool) -> None:
    # The journal's values are written back into the kernel by rollback: a file someone else
    # could have edited is not one to trust.
    info = os.lstat(path)
    kind_ok = stat.S_ISDIR(info.st_mode) if want_dir else stat.S_ISREG(info.st_mode)
    if not kind_ok:
        raise FixError(f"{path} is not a {'directory' if want_dir else 'regular file'} (a symlink?); "
                       "refusing to use it as the fix journal")
    if info.st_uid != os.geteuid() or info.st_mode & 0o022:
        raise FixError(f"{path} is owned by uid {info.st_uid} with mode {stat.S_IMODE(info.st_mode):o}: "
                       "only its owner may write the fix journal; fix its owner/mode or remove it")


def prepare_dir(journal_dir: Path) -> None:
    try:
        journal_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise FixError(f"cannot create the journal directory {journal_dir}: {exc.strerror}") from exc
    check_trusted(journal_dir, want_dir=True)


@contextmanager
def journal_lock(journal_dir: Path) -> Iterator[None]:
    # One apply or rollback at a time; a separate lock file because the journal itself is
    # replaced by rename, which would leave a lock on the old inode.
    fd = os.open(journal_dir / _LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FixError(f"another netprof fix --apply/--rollback holds {journal_dir / _LOCK_NAME}") from None
        yield
    finally:
        os.close(fd)


def load_journal(path: Path) -> dict[str, Any] | None:
    try:
        check_trusted(path, want_dir=False)
    except FileNotFoundError:
        return None
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("format") != JOURNAL_FORMAT:
            raise ValueError(f"format is not {JOURNAL_FORMAT}")
        PlanIdentity.from_json(data.get("identity"))
        entries = data.get("entries")
        if not isinstance(entries, list):
            raise ValueError("entries is not a list")
        for entry in entries:
            entry_change(entry)
            if entry.get("state") not in ("open", "restored", "gone") or not isinstance(entry.get("previous"), str):
                raise ValueError(f"bad entry {entry!r:.120}")
            inode = entry.get("netns_inode")
            if inode is not None and (not isinstance(inode, int) or isinstance(inode, bool)):
                raise ValueError(f"bad netns_inode in entry {entry!r:.120}")
    except (OSError, ValueError, TypeError, RecursionError) as exc:
        raise FixError(f"fix journal {path} is unreadable or corrupt ({exc}); inspect it before removing it") from exc
    return data


def save_journal(path: Path, data: dict[str, Any]) -> None:
    # Write, fsync, rename, fsync the directory: after a crash the journal is either the old
    # complete one or the new complete one, and the rename itself survives a power cut.
    data["updated_at"] = time.time()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise FixError(f"cannot write the fix journal {path}: {exc.strerror}") from exc


def entry_change(entry: Any) -> Change:
    if not isinstance(entry, dict) or not isinstance(entry.get("change"), dict):
        raise ValueError(f"bad entry {entry!r:.120}")
    raw = entry["change"]
    for name in ("kind", "key", "value"):
        if not isinstance(raw.get(name), str):
            raise ValueError(f"entry change has no {name}")
    for name in ("netns", "expected_current"):
        if raw.get(name) is not None and not isinstance(raw[name], str):
            raise ValueError(f"entry change {name} is not a string")
    return Change(kind=raw["kind"], key=raw["key"], value=raw["value"], netns=raw.get("netns"),
                  expected_current=raw.get("expected_current"))


def _new_journal(identity: PlanIdentity) -> dict[str, Any]:
    return {"format": JOURNAL_FORMAT, "identity": identity.to_json(), "created_at": time.time(), "entries": []}


def journal_for_apply(journal_dir: Path, identity: PlanIdentity) -> dict[str, Any]:
    """The journal this apply appends to.

    Open entries of this boot stay: rollback then undoes every apply since the last rollback,
    newest first, back to the values before the first. Open entries of another boot are
    meaningless now; that journal is kept aside (renamed) rather than destroyed.
    """
    path = journal_dir / JOURNAL_NAME
    data = load_journal(path)
    if data is None or not any(entry["state"] == "open" for entry in data["entries"]):
        return _new_journal(identity)
    old = PlanIdentity.from_json(data["identity"])
    if old.boot_id == identity.boot_id and old.kernel_release == identity.kernel_release:
        return data
    stale = journal_dir / f"fix-journal.stale-{old.boot_id[:8]}.json"
    try:
        os.replace(path, stale)
    except OSError as exc:
        raise FixError(f"cannot set aside the previous boot's journal {path}: {exc.strerror}") from exc
    return _new_journal(identity)


@dataclass(frozen=True)
class AppliedEvent:
    """The newest apply in the journal: what the TUI marks on its timeline."""

    apply_id: str
    applied_at: float       # wall clock of its first journaled write
    changes: tuple[str, ...]  # describe() of each change, in order


def latest_apply(journal_dir: Path = DEFAULT_JOURNAL_DIR) -> AppliedEvent | None:
    """The newest apply the journal records (rolled back or not), or None without a journal.
    Read with the same trust checks as a rollback; a journal that fails them is no event."""
    try:
        journal = load_journal(Path(journal_dir) / JOURNAL_NAME)
    except (FixError, OSError):
        return None
    entries = [entry for entry in (journal or {}).get("entries", []) if entry.get("apply_id")]
    if not entries:
        return None
    newest = max(entries, key=lambda entry: float(entry.get("journaled_at") or 0.0))["apply_id"]
    mine = [entry for entry in entries if entry["apply_id"] == newest]
    return AppliedEvent(str(newest), min(float(entry.get("journaled_at") or 0.0) for entry in mine),
                        tuple(describe(entry_change(entry)) for entry in mine))


def record_verdicts(journal_dir: Path, apply_id: str, verdicts: list[dict[str, Any]]) -> None:
    """Keep `fix --verify`'s verdicts (kept / rolled back, with the figures before and after)
    in the journal beside the entries of the apply they judged."""
    journal_path = Path(journal_dir) / JOURNAL_NAME
    with journal_lock(Path(journal_dir)):
        journal = load_journal(journal_path)
        if journal is None:
            raise FixError(f"no fix journal at {journal_path} to record the verification in")
        journal.setdefault("verdicts", []).append({"apply_id": apply_id, "at": time.time(), "verdicts": verdicts})
        save_journal(journal_path, journal)
