"""Sysctl changes that are always undone, even after the process that made them died.

Each change is written to the lab's state file (`/run/netprof/lab/<prefix>.json`) *before*
the kernel value is touched, so a fresh process running `down_all()` after a crash or a
SIGKILL still knows the original value. /run is a tmpfs: after a reboot the kernel values
are back to their defaults anyway, so the state dies at the right moment too.

The same state file also holds the lab's topology (written by `topology.Lab.up`), which is
why the read-modify-write helpers live here, in the lowest module of the package.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from profiler.lab import LAB_NAME_MARK, LabError, run_checked

STATE_DIR = Path("/run/netprof/lab")
STATE_VERSION = 1

_PREFIX_RE = re.compile(rf"^{LAB_NAME_MARK}[0-9a-z]{{1,16}}$")
_KEY_RE = re.compile(r"^[A-Za-z0-9_.\-/]+$")


@dataclass(frozen=True)
class SysctlChange:
    key: str                 # dotted name, e.g. "net.core.somaxconn"
    netns: str | None        # None: the namespace of the process (the node's root netns)
    original: str            # value before the lab's first change
    value: str               # value the lab set last


def check_prefix(prefix: str) -> str:
    # The prefix becomes part of file names, netns names and an nft table name: refuse
    # anything that could escape a path or collide with a non-lab object.
    if not _PREFIX_RE.match(prefix):
        raise LabError(
            f"bad lab prefix {prefix!r}: expected '{LAB_NAME_MARK}' followed by 1-16 of [0-9a-z]"
        )
    return prefix


def state_path(prefix: str) -> Path:
    return STATE_DIR / f"{check_prefix(prefix)}.json"


def _lock_path(prefix: str) -> Path:
    return STATE_DIR / f".{check_prefix(prefix)}.lock"


@contextmanager
def _locked(prefix: str) -> Iterator[None]:
    # A separate lock file (not the JSON itself) because the JSON is replaced by rename,
    # which would leave a lock on the old inode.
    STATE_DIR.mkdir(parents=True, exist_ok=True)
    with open(_lock_path(prefix), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def load_state(prefix: str) -> dict[str, Any] | None:
    """The lab's state file as a dict, or None if there is none."""
    path = state_path(prefix)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        state = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LabError(f"lab state file {path} is corrupt ({exc}); inspect it and delete it") from exc
    if not isinstance(state, dict):
        raise LabError(f"lab state file {path} is not a JSON object; inspect it and delete it")
    return state


def _write_state(prefix: str, state: dict[str, Any]) -> None:
    # Write-then-rename so a crash mid-write never leaves half a file: the previous complete
    # state survives instead, and it still names every sysctl changed before this one.
    path = state_path(prefix)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w") as f:
        json.dump(state, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def update_state(prefix: str, mutate: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Read-modify-write the state file under a lock; creates it when absent."""
    with _locked(prefix):
        state = load_state(prefix) or {
            "version": STATE_VERSION,
            "prefix": prefix,
            "created_at": time.time(),
            "sysctls": [],
        }
        mutate(state)
        _write_state(prefix, state)
        return state


def remove_state(prefix: str) -> list[str]:
    """Delete the state and lock files; returns the paths removed."""
    removed = []
    for path in (state_path(prefix), _lock_path(prefix)):
        try:
            path.unlink()
        except FileNotFoundError:
            continue
        removed.append(str(path))
    return removed


def recorded_sysctls(prefix: str) -> list[SysctlChange]:
    state = load_state(prefix) or {}
    return [SysctlChange(**entry) for entry in state.get("sysctls", [])]


def _proc_path(key: str) -> Path:
    if not _KEY_RE.match(key) or ".." in key.split("/"):
        raise LabError(f"bad sysctl name {key!r}")
    # Dotted names map dots to directories; names holding a literal dot (a VLAN interface
    # such as eth0.100) must be given with slashes, as sysctl(8) also accepts.
    rel = key if "/" in key else key.replace(".", "/")
    return Path("/proc/sys") / rel.lstrip("/")


def netns_exists(netns: str) -> bool:
    return Path("/run/netns", netns).exists()


def read_sysctl(key: str, netns: str | None = None) -> str:
    if netns is None:
        path = _proc_path(key)
        try:
            return path.read_text().strip()
        except OSError as exc:
            raise LabError(f"cannot read sysctl {key} ({path}): {exc.strerror}") from exc
    _proc_path(key)  # validate the name before it reaches an argv
    return run_checked(["ip", "netns", "exec", netns, "sysctl", "-n", key]).stdout.strip()


def write_sysctl(key: str, value: str, netns: str | None = None) -> None:
    if netns is None:
        path = _proc_path(key)
        try:
            path.write_text(f"{value}\n")
        except OSError as exc:
            raise LabError(f"cannot set sysctl {key}={value} ({path}): {exc.strerror}") from exc
        return
    _proc_path(key)
    run_checked(["ip", "netns", "exec", netns, "sysctl", "-q", "-w", f"{key}={value}"])


def set_sysctl(lab_prefix: str, key: str, value: str | int, netns: str | None = None) -> SysctlChange:
    """Set `key` (in `netns`, or node-wide when None), recording the original value first.

    Setting the same key twice keeps the first original, so a restore always returns to the
    value the node had before the lab touched it.
    """
    value_text = str(value)
    original = read_sysctl(key, netns)

    def record(state: dict[str, Any]) -> None:
        entries = state.setdefault("sysctls", [])
        for entry in entries:
            if entry["key"] == key and entry["netns"] == netns:
                entry["value"] = value_text
                return
        entries.append(asdict(SysctlChange(key, netns, original, value_text)))

    update_state(lab_prefix, record)
    write_sysctl(key, value_text, netns)
    return SysctlChange(key, netns, original, value_text)


def restore_sysctls(lab_prefix: str) -> list[SysctlChange]:
    """Put back every recorded original value, newest change first; returns what was restored.

    A change made inside a namespace that no longer exists is dropped silently: its value
    died with the namespace. Entries that fail to restore stay in the state file so a later
    `down_all()` can retry, and a LabError lists them after every other entry was tried.
    """
    restored: list[SysctlChange] = []
    failures: list[tuple[SysctlChange, str]] = []
    with _locked(lab_prefix):
        state = load_state(lab_prefix)
        if state is None:
            return []
        changes = [SysctlChange(**entry) for entry in state.get("sysctls", [])]
        for change in reversed(changes):
            if change.netns is not None and not netns_exists(change.netns):
                continue
            try:
                write_sysctl(change.key, change.original, change.netns)
            except LabError as exc:
                failures.append((change, str(exc)))
                continue
            restored.append(change)
        state["sysctls"] = [asdict(change) for change, _ in reversed(failures)]
        _write_state(lab_prefix, state)
    if failures:
        detail = "; ".join(message for _, message in failures)
        raise LabError(f"could not restore {len(failures)} sysctl(s) of lab {lab_prefix}: {detail}")
    return restored


def list_state_prefixes() -> list[str]:
    """Prefixes of every lab that has a state file (running, or crashed without cleaning)."""
    if not STATE_DIR.is_dir():
        return []
    prefixes = []
    for path in STATE_DIR.glob(f"{LAB_NAME_MARK}*.json"):
        if _PREFIX_RE.match(path.stem):
            prefixes.append(path.stem)
    return sorted(prefixes)
