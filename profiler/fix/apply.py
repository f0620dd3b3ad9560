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

import ctypes
import errno
import fcntl
import json
import os
import re
import secrets
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NoReturn, TypeVar

from ..analysis.findings import Change, Fix
from ..errors import NetprofError
from ..kernel.root_files import resolve_in_root
from ..system.cpus import parse_cpu_list, parse_cpu_mask, read_cpus_online
from ..system.netns import run_in_netns

T = TypeVar("T")

DEFAULT_JOURNAL_DIR = Path("/var/lib/netprof")
JOURNAL_NAME = "fix-journal.json"
JOURNAL_FORMAT = "netprof.fix-journal/v1"
_LOCK_NAME = ".fix-journal.lock"
# The process's own netns, opened from inside the worker thread (/proc/self is the thread
# group, so this is where the process lives, whatever the thread did before).
_OWN_NETNS = "/proc/self/ns/net"

ValueForm = Literal["text", "cpu_mask", "cpu_list", "count"]
EntryState = Literal["open", "restored", "gone"]


class FixError(NetprofError):
    """The journal cannot be used (corrupt, untrusted) or cannot be written."""


# --------------------------------------------------------------------------- public data


@dataclass(frozen=True)
class PlanIdentity:
    """Which node, boot and kernel a plan (or a journal) belongs to.

    boot_id changes on every boot (and on kexec), so values read during another boot say
    nothing about this one. The hostname is only there to name the node in messages: a plan
    from another machine already differs in boot_id.
    """

    kernel_release: str
    boot_id: str
    hostname: str

    def to_json(self) -> dict[str, str]:
        return {"kernel_release": self.kernel_release, "boot_id": self.boot_id, "hostname": self.hostname}

    @classmethod
    def from_json(cls, data: Any) -> PlanIdentity:
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in
                                                 ("kernel_release", "boot_id", "hostname")):
            raise ValueError("identity must hold kernel_release, boot_id and hostname strings")
        return cls(data["kernel_release"], data["boot_id"], data["hostname"])


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


# --------------------------------------------------------------------------- identity, privilege


def current_identity(root: Path = Path("/")) -> PlanIdentity:
    def read(name: str) -> str:
        try:
            return (Path(root) / "proc/sys/kernel" / name).read_text().strip()
        except OSError as exc:
            raise FixError(f"cannot read /proc/sys/kernel/{name}: {exc.strerror}") from exc

    return PlanIdentity(kernel_release=read("osrelease"), boot_id=read("random/boot_id"),
                        hostname=read("hostname"))


# Writing rps_cpus/xps_cpus checks CAP_NET_ADMIN in the kernel; setns(2) and mounting a
# sysfs instance need CAP_SYS_ADMIN.
_REQUIRED_CAPS = {12: "CAP_NET_ADMIN", 21: "CAP_SYS_ADMIN"}


def missing_privilege(status_text: str | None = None, euid: int | None = None) -> str | None:
    """Why this process may not apply fixes, or None. Arguments default to the live process."""
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        return (f"not root (euid {euid}): applying fixes writes kernel settings; "
                "run `netprof fix --apply` as root")
    if status_text is None:
        try:
            status_text = Path("/proc/self/status").read_text()
        except OSError:
            return None
    match = re.search(r"^CapEff:\s*([0-9a-fA-F]+)\s*$", status_text, re.MULTILINE)
    if not match:
        return None
    effective = int(match.group(1), 16)
    missing = [name for bit, name in sorted(_REQUIRED_CAPS.items()) if not effective >> bit & 1]
    if missing:
        return f"root without {', '.join(missing)}: applying fixes needs them (a dropped-capability container?)"
    return None


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class _Target:
    """Where a Change lands: a file in procfs or sysfs, as seen from one netns."""

    area: Literal["proc", "sys"]
    relpath: str                 # inside that filesystem: "sys/net/core/somaxconn"
    netns: str | None
    form: ValueForm
    resolves_to: re.Pattern[str]  # what relpath must resolve to (no symlink out of the area)
    shown: str                   # how the operator names it

    @property
    def is_cpu_set(self) -> bool:
        return self.form in ("cpu_mask", "cpu_list")


class _Refused(Exception):
    pass


class _Unavailable(Exception):
    """The target's file cannot be reached (missing, outside its area, netns replaced)."""


_NAME_PART = r"[A-Za-z0-9_.:@+\-]+"
_SYSCTL_DOTTED = re.compile(r"^net(\.[A-Za-z0-9_:@+\-]+)+$")
_SYSCTL_SLASHED = re.compile(rf"^net(/{_NAME_PART})+$")
_IRQ_FILE = re.compile(r"^/proc/irq/(?P<irq>[0-9]{1,6})/(?P<file>smp_affinity_list|smp_affinity)$")
_QUEUE_FILE = re.compile(
    r"^/sys/class/net/(?P<dev>[^/\s]{1,15})/queues/"
    r"(?P<queue>(?P<dir>rx|tx)-[0-9]{1,5})/(?P<file>rps_cpus|rps_flow_cnt|xps_cpus)$")
_NETNS_PATH = re.compile(r"^(/var)?/run/netns/[^/\s]+$|^/proc/[0-9]+(/task/[0-9]+)?/ns/net$")
_MAX_VALUE_CHARS = 4096


def _target_of(change: Change) -> _Target:
    """The allow-listed file a Change writes, or _Refused saying why it is not allowed."""
    if change.netns is not None:
        if not _NETNS_PATH.match(change.netns) or "/../" in f"{change.netns}/":
            raise _Refused(f"netns {change.netns!r} is not /run/netns/<name> or /proc/<pid>/ns/net")
    if change.kind == "sysctl":
        key = change.key
        if _SYSCTL_DOTTED.match(key):
            relpath = key.replace(".", "/")
        elif _SYSCTL_SLASHED.match(key):
            # The slashed form is how a name holding a dot (eth0.100) is spelt, as sysctl(8) takes it.
            relpath = key
        else:
            raise _Refused(f"sysctl {key!r} is not under net.: only network sysctls are applied")
        if any(part in (".", "..") for part in relpath.split("/")):
            raise _Refused(f"sysctl {key!r} has a . or .. component")
        return _Target("proc", f"sys/{relpath}", change.netns, "text",
                       re.compile(re.escape(f"sys/{relpath}")), key)
    if change.kind != "file":
        raise _Refused(f"unknown change kind {change.kind!r}")
    if match := _IRQ_FILE.match(change.key):
        if change.netns is not None:
            raise _Refused(f"{change.key}: IRQs belong to the node, not to a network namespace; netns must be empty")
        relpath = change.key.removeprefix("/proc/")
        form: ValueForm = "cpu_list" if match["file"] == "smp_affinity_list" else "cpu_mask"
        return _Target("proc", relpath, None, form, re.compile(re.escape(relpath)), change.key)
    if match := _QUEUE_FILE.match(change.key):
        dev, queue, file = match["dev"], match["queue"], match["file"]
        if dev in (".", ".."):
            raise _Refused(f"{change.key}: bad interface name")
        if (file == "xps_cpus") != (match["dir"] == "tx"):
            raise _Refused(f"{change.key}: {file} belongs to {'tx' if file == 'xps_cpus' else 'rx'} queues")
        relpath = change.key.removeprefix("/sys/")
        # /sys/class/net/<dev> is a link into /sys/devices; the file must end up there, under
        # the same device name and queue, and nowhere else.
        pattern = re.compile(rf"devices/(?:[^/]+/)*net/{re.escape(dev)}/queues/{queue}/{file}")
        return _Target("sys", relpath, change.netns, "count" if file == "rps_flow_cnt" else "cpu_mask",
                       pattern, change.key)
    raise _Refused(
        f"{change.key!r} is not an allowed target: netprof writes only net.* sysctls, "
        "/proc/irq/<n>/smp_affinity[_list] and /sys/class/net/<if>/queues/{rx,tx}-<n>/{rps_cpus,rps_flow_cnt,xps_cpus}")


def _check_value(target: _Target, value: str) -> None:
    if len(value) > _MAX_VALUE_CHARS or not value.isprintable() or "\n" in value:
        raise _Refused(f"value {value[:40]!r} is not a single printable line")
    if not value.strip():
        raise _Refused("empty value")
    try:
        cpus = _canonical(target.form, value)
    except ValueError as exc:
        raise _Refused(f"value {value!r} is not a valid {target.form.replace('_', ' ')}: {exc}") from None
    if target.area == "proc" and target.is_cpu_set and not cpus:
        raise _Refused("an IRQ needs at least one CPU in its affinity")


def _canonical(form: ValueForm, text: str) -> Any:
    text = text.strip()
    if form == "cpu_mask":
        return parse_cpu_mask(text)
    if form == "cpu_list":
        return parse_cpu_list(text)
    if form == "count":
        if not re.fullmatch(r"[0-9]{1,10}", text):
            raise ValueError("not a decimal count")
        return int(text)
    # The kernel prints multi-value sysctls (tcp_rmem) tab-separated; a plan writes spaces.
    return " ".join(text.split())


def _same(form: ValueForm, a: str, b: str) -> bool:
    try:
        return bool(_canonical(form, a) == _canonical(form, b))
    except ValueError:
        return False


def same_value(change: Change, a: str, b: str) -> bool:
    """Whether two readings of the file `change` writes mean the same setting.

    "00000003" and "3" are the same rps_cpus mask; "0-1" and "0,1" the same affinity list;
    "4096\\t131072" and "4096 131072" the same tcp_rmem.
    """
    try:
        form = _target_of(change).form
    except _Refused:
        form = "text"
    return _same(form, a, b)


def node_scope_changes(fixes: Iterable[Fix]) -> tuple[Change, ...]:
    """The changes apply_changes() may make: those of node-scope fixes, in order."""
    return tuple(change for fix in fixes if fix.scope == "node" for change in fix.changes)


def describe(change: Change) -> str:
    where = f" in netns {change.netns}" if change.netns else ""
    return f"{change.key}{where}"


# --------------------------------------------------------------------------- reaching the files


def _is_live(root: Path) -> bool:
    return os.path.abspath(root) == "/"


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long
# The new mount API's syscall numbers are the same on every architecture (unified table, 5.2).
_SYS_FSOPEN, _SYS_FSCONFIG, _SYS_FSMOUNT = 430, 431, 432
_FSOPEN_CLOEXEC = 0x1
_FSCONFIG_CMD_CREATE = 6
_FSMOUNT_CLOEXEC = 0x1
_MOUNT_ATTR_NOSUID, _MOUNT_ATTR_NODEV, _MOUNT_ATTR_NOEXEC = 0x2, 0x4, 0x8
_CLONE_NEWNS = 0x00020000
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MS_REC, _MS_SLAVE = 0x2, 0x4, 0x8, 0x4000, 0x80000


def _raise_errno(what: str) -> NoReturn:
    err = ctypes.get_errno()
    raise OSError(err, f"{what}: {os.strerror(err)}")


def _detached_sysfs() -> int:
    """A sysfs instance for the calling thread's netns, as a mount fd attached nowhere."""
    fs_fd = _libc.syscall(_SYS_FSOPEN, b"sysfs", _FSOPEN_CLOEXEC)
    if fs_fd < 0:
        _raise_errno("fsopen(sysfs)")
    try:
        if _libc.syscall(_SYS_FSCONFIG, fs_fd, _FSCONFIG_CMD_CREATE, None, None, 0) < 0:
            _raise_errno("fsconfig(sysfs)")
        mount_fd = _libc.syscall(_SYS_FSMOUNT, fs_fd, _FSMOUNT_CLOEXEC,
                                 _MOUNT_ATTR_NOSUID | _MOUNT_ATTR_NODEV | _MOUNT_ATTR_NOEXEC)
        if mount_fd < 0:
            _raise_errno("fsmount(sysfs)")
        return int(mount_fd)
    finally:
        os.close(fs_fd)


def _private_sysfs() -> Path:
    """Mount sysfs over /sys in a mount namespace private to the calling (throwaway) thread.

    unshare(CLONE_NEWNS) also unshares the thread's fs_struct, so the rest of the process
    keeps its mounts; the mount namespace dies with the thread.
    """
    if threading.current_thread() is threading.main_thread():
        raise RuntimeError("_private_sysfs changes the calling thread's mounts; call it in a worker thread")
    if _libc.unshare(_CLONE_NEWNS) != 0:
        _raise_errno("unshare(CLONE_NEWNS)")
    # Slave first: without it the new mount could propagate back to the node's /sys.
    if _libc.mount(None, b"/", None, _MS_REC | _MS_SLAVE, None) != 0:
        _raise_errno("mount --make-rslave /")
    if _libc.mount(b"sysfs", b"/sys", b"sysfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, None) != 0:
        _raise_errno("mount sysfs")
    return Path("/sys")


# Tests flip this to exercise the fallback on kernels that have the new mount API.
_USE_DETACHED_SYSFS = True


@contextmanager
def _fresh_sysfs() -> Iterator[Path]:
    """The root of a sysfs that shows the calling thread's network namespace."""
    if _USE_DETACHED_SYSFS:
        try:
            mount_fd = _detached_sysfs()
        except OSError as exc:
            if exc.errno not in (errno.ENOSYS, errno.EPERM):
                raise
        else:
            try:
                yield Path(f"/proc/self/fd/{mount_fd}")
            finally:
                os.close(mount_fd)
            return
    yield _private_sysfs()


def _resolve(base: Path, target: _Target) -> Path:
    resolved = resolve_in_root(base, target.relpath)
    area = f"/{target.area}"
    if resolved is None:
        raise _Unavailable(f"{target.shown}: not found in {area} of that netns (or a link leading out of {area})")
    relative = os.path.relpath(resolved, os.path.abspath(base))
    if not target.resolves_to.fullmatch(relative):
        raise _Unavailable(f"{target.shown}: resolves to {area}/{relative}, which is not an allowed target")
    return resolved


def _thread_netns_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def _at_target(target: _Target, root: Path, op: Callable[[Path], T],
               netns_inode: int | None = None) -> T:
    """op(path of the target's file), with the file as the target's netns sees it."""
    if not _is_live(root):
        if target.netns is not None:
            raise _Unavailable(f"{target.shown}: a netns change can only be made on the live node (root /)")
        return op(_resolve(Path(root) / target.area, target))

    def in_netns() -> T:
        if netns_inode is not None and _thread_netns_inode() != netns_inode:
            raise _Unavailable(f"netns {target.netns or 'of the node'} was replaced by another one "
                               "since the plan was checked")
        if target.area == "proc":
            return op(_resolve(Path("/proc"), target))
        with _fresh_sysfs() as sysfs:
            return op(_resolve(sysfs, target))

    return run_in_netns(target.netns or _OWN_NETNS, in_netns)


def _read_value(path: Path) -> str:
    # O_NOFOLLOW: the path was resolved link by link; O_NONBLOCK: a FIFO in a fake tree.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _Unavailable(f"{path} is not a regular file")
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
            if sum(map(len, chunks)) > 1 << 20:
                raise _Unavailable(f"{path} is larger than any setting")
        return b"".join(chunks).decode("utf-8", errors="replace").strip()
    finally:
        os.close(fd)


def _write_value(path: Path, value: str) -> None:
    # One write(2) of the whole value from offset 0: that is what sysctl and sysfs stores
    # parse (a second write would be parsed on its own). O_TRUNC matters for fake trees only.
    data = f"{value}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _Unavailable(f"{path} is not a regular file")
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(errno.EIO, f"short write ({written} of {len(data)} bytes)")
    finally:
        os.close(fd)


def _read_for_check(path: Path) -> tuple[str, bool]:
    # effective_ids: a read-only sysctl (nf_conntrack_max inside a pod netns) shows mode 0444
    # and refuses even root, which access(2) with AT_EACCESS reports.
    return _read_value(path), os.access(path, os.W_OK, effective_ids=True)


def _error_text(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return str(exc)


# --------------------------------------------------------------------------- precheck


@dataclass(frozen=True)
class _Planned:
    change: Change
    target: _Target
    current: str
    netns_inode: int | None


def _netns_inode(netns: str | None, root: Path) -> int | None:
    """The inode of the netns a change targets; _Refused when it is gone or not a netns."""
    if not _is_live(root):
        if netns is not None:
            raise _Refused("a netns change can only be checked on the live node (root /)")
        return None
    try:
        found = os.stat(netns or _OWN_NETNS)
    except FileNotFoundError:
        raise _Refused(f"netns {netns} is gone (the pod was deleted or restarted?)") from None
    except OSError as exc:
        raise _Refused(f"cannot stat netns {netns}: {exc.strerror}") from None
    if found.st_dev != os.stat(_OWN_NETNS).st_dev:
        raise _Refused(f"{netns} is not a namespace file")
    return found.st_ino


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
    return missing_privilege() if _is_live(root) else None


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
    candidates: list[tuple[Change, _Target, int | None]] = []
    seen: dict[tuple[str, str, int | str | None], Change] = {}
    for change in changes:
        try:
            target = _target_of(change)
            _check_value(target, change.value)
            if target.is_cpu_set and online:
                offline = _canonical(target.form, change.value) - online
                if offline:
                    raise _Refused(f"CPU(s) {sorted(offline)} are not online here")
            inode = None if privilege else _netns_inode(target.netns, root)
        except _Refused as exc:
            refused.append((change, str(exc)))
            continue
        where = (target.area, target.relpath, inode if inode is not None else target.netns)
        if where in seen:
            if not _same(target.form, seen[where].value, change.value):
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
            current, writable = _at_target(target, root, _read_for_check, inode)
        except (_Unavailable, OSError, NetprofError) as exc:
            refused.append((change, f"cannot read it: {_error_text(exc)}"))
            continue
        if not writable:
            refused.append((change, "read-only here (in a pod netns, a node-global sysctl is read-only "
                                    "or absent: set it on the node instead)"))
        if change.expected_current is not None and not _same(target.form, current, change.expected_current):
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


# --------------------------------------------------------------------------- the journal


def _check_trusted(path: Path, want_dir: bool) -> None:
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


def _prepare_dir(journal_dir: Path) -> None:
    try:
        journal_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise FixError(f"cannot create the journal directory {journal_dir}: {exc.strerror}") from exc
    _check_trusted(journal_dir, want_dir=True)


@contextmanager
def _journal_lock(journal_dir: Path) -> Iterator[None]:
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


def _load_journal(path: Path) -> dict[str, Any] | None:
    try:
        _check_trusted(path, want_dir=False)
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
            _entry_change(entry)
            if entry.get("state") not in ("open", "restored", "gone") or not isinstance(entry.get("previous"), str):
                raise ValueError(f"bad entry {entry!r:.120}")
            inode = entry.get("netns_inode")
            if inode is not None and (not isinstance(inode, int) or isinstance(inode, bool)):
                raise ValueError(f"bad netns_inode in entry {entry!r:.120}")
    except (OSError, ValueError, TypeError, RecursionError) as exc:
        raise FixError(f"fix journal {path} is unreadable or corrupt ({exc}); inspect it before removing it") from exc
    return data


def _save_journal(path: Path, data: dict[str, Any]) -> None:
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


def _entry_change(entry: Any) -> Change:
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


def _journal_for_apply(journal_dir: Path, identity: PlanIdentity) -> dict[str, Any]:
    """The journal this apply appends to.

    Open entries of this boot stay: rollback then undoes every apply since the last rollback,
    newest first, back to the values before the first. Open entries of another boot are
    meaningless now; that journal is kept aside (renamed) rather than destroyed.
    """
    path = journal_dir / JOURNAL_NAME
    data = _load_journal(path)
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


# --------------------------------------------------------------------------- writing


def _write_verified(change: Change, target: _Target, expected_now: str, value: str,
                    netns_inode: int | None, root: Path) -> WriteResult:
    """Write `value` if the target still holds `expected_now`, read it back, compare."""

    def write_and_read(path: Path) -> WriteResult:
        now = _read_value(path)
        if not _same(target.form, now, expected_now):
            return WriteResult(change, now, now, False,
                               f"changed by someone else since the check: expected {expected_now!r}, found {now!r}; not written")
        try:
            _write_value(path, value)
        except OSError as exc:
            after = _read_value(path)
            return WriteResult(change, now, after, False, f"the kernel refused {value!r}: {_error_text(exc)}")
        after = _read_value(path)
        if not _same(target.form, after, value):
            return WriteResult(change, now, after, False, f"wrote {value!r} but it reads back as {after!r}")
        return WriteResult(change, now, after, True, None)

    try:
        return _at_target(target, root, write_and_read, netns_inode)
    except (_Unavailable, OSError, NetprofError) as exc:
        return WriteResult(change, expected_now, "", False, _error_text(exc))


class _Unrestorable(Exception):
    """A journal entry that cannot be restored now; it stays open for the next rollback."""


def _check_restorable(target: _Target, change: Change, previous: str) -> None:
    """The journaled previous value must be one the kernel could have shown for this target.

    The journal is root's own file, but rollback writes its values into the kernel, so it is
    read as untrusted: a value with a line break (`4096\nkernel.x=1`), or of another shape than
    the value netprof wrote over it, is not written back.
    """
    try:
        # Tabs are how the kernel separates the fields of multi-value sysctls (tcp_rmem).
        _check_value(target, previous.replace("\t", " "))
    except _Refused as exc:
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
    change = _entry_change(entry)
    previous = entry["previous"]
    target = _target_of(change)
    _check_restorable(target, change, previous)
    undo = Change(change.kind, change.key, previous, change.netns, expected_current=change.value)
    inode = entry.get("netns_inode")
    if _is_live(root) and target.netns is not None:
        try:
            found = os.stat(target.netns).st_ino
        except FileNotFoundError:
            found = None
        except OSError as exc:
            raise _Unrestorable(f"cannot reach netns {target.netns}: {_error_text(exc)}") from None
        if found is None or (inode is not None and found != inode):
            entry["state"] = "gone"
            return None, f"netns {target.netns} is gone (or is another one now): the value went with it"

    def restore_at(path: Path) -> WriteResult:
        now = _read_value(path)
        if _same(target.form, now, previous):
            # Nothing to do: the write never happened (a crash between journal and write, or
            # the write failed) or someone already put it back.
            return WriteResult(undo, now, now, True, None)
        if not _same(target.form, now, change.value) and not force:
            return WriteResult(undo, now, now, False,
                               f"changed by someone else since the apply: netprof wrote {change.value!r}, "
                               f"now {now!r}; not restored to {previous!r} (rollback with force to overwrite)")
        try:
            _write_value(path, previous)
        except OSError as exc:
            return WriteResult(undo, now, _read_value(path), False, f"the kernel refused {previous!r}: {_error_text(exc)}")
        after = _read_value(path)
        if not _same(target.form, after, previous):
            return WriteResult(undo, now, after, False, f"wrote {previous!r} but it reads back as {after!r}")
        return WriteResult(undo, now, after, True, None)

    try:
        result = _at_target(target, root, restore_at, inode if _is_live(root) else None)
    except (_Unavailable, OSError, NetprofError) as exc:
        result = WriteResult(undo, "", "", False, _error_text(exc))
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
               for p in planned if _same(p.target.form, p.current, p.change.value)]
    to_write = [p for p in planned if not _same(p.target.form, p.current, p.change.value)]
    if dry_run:
        would = [WriteResult(p.change, p.current, p.change.value, False, None) for p in to_write]
        return ApplyReport(in_plan_order(would + already), (), journal_path, note="dry run: nothing was written",
                           dry_run=True)
    if not to_write:
        return ApplyReport(tuple(already), (), journal_path, note="every value is already set")

    journal_dir = Path(journal_dir)
    _prepare_dir(journal_dir)
    with _journal_lock(journal_dir):
        journal = _journal_for_apply(journal_dir, current_identity(root))
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
                _save_journal(journal_path, journal)
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
            restored = WriteResult(_entry_change(entry), entry["previous"], "", False, str(exc))
        if restored is not None:
            undone.append(restored)
        try:
            _save_journal(journal_path, journal)
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
    _check_trusted(journal_dir, want_dir=True)
    with _journal_lock(journal_dir):
        journal = _load_journal(journal_path)
        assert journal is not None
        open_entries = [entry for entry in journal["entries"] if entry["state"] == "open"
                        and (apply_id is None or entry.get("apply_id") == apply_id)
                        and (only is None or only(_entry_change(entry)))]
        if not open_entries:
            return ApplyReport((), (), journal_path, operation="rollback",
                               note="nothing to roll back: the last apply was already rolled back")
        changes = [_entry_change(entry) for entry in open_entries]
        problem = _privilege_problem(root) or _identity_problem(
            PlanIdentity.from_json(journal["identity"]), current_identity(root), "the journal was written")
        if problem:
            return ApplyReport((), tuple((change, problem) for change in changes), journal_path,
                               note="nothing was restored", operation="rollback")
        refused: list[tuple[Change, str]] = []
        for entry, change in zip(open_entries, changes):
            try:
                _target_of(change)
                if allowed_sysctls is not None and change.kind == "sysctl" and change.key not in allowed_sysctls:
                    raise _Refused(f"{change.key!r} is not a sysctl netprof's fixes change")
            except _Refused as exc:
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
            _save_journal(journal_path, journal)
        left = [describe(_entry_change(entry)) for entry in journal["entries"] if entry["state"] == "open"]
        note = "" if not left else (f"{len(left)} value(s) not restored ({', '.join(left)}); "
                                    "they stay in the journal for the next rollback")
        return ApplyReport(tuple(restored), (), journal_path, skipped=tuple(skipped),
                           unrestorable=tuple(unrestorable), note=note, operation="rollback")


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
        journal = _load_journal(Path(journal_dir) / JOURNAL_NAME)
    except (FixError, OSError):
        return None
    entries = [entry for entry in (journal or {}).get("entries", []) if entry.get("apply_id")]
    if not entries:
        return None
    newest = max(entries, key=lambda entry: float(entry.get("journaled_at") or 0.0))["apply_id"]
    mine = [entry for entry in entries if entry["apply_id"] == newest]
    return AppliedEvent(str(newest), min(float(entry.get("journaled_at") or 0.0) for entry in mine),
                        tuple(describe(_entry_change(entry)) for entry in mine))


def record_verdicts(journal_dir: Path, apply_id: str, verdicts: list[dict[str, Any]]) -> None:
    """Keep `fix --verify`'s verdicts (kept / rolled back, with the figures before and after)
    in the journal beside the entries of the apply they judged."""
    journal_path = Path(journal_dir) / JOURNAL_NAME
    with _journal_lock(Path(journal_dir)):
        journal = _load_journal(journal_path)
        if journal is None:
            raise FixError(f"no fix journal at {journal_path} to record the verification in")
        journal.setdefault("verdicts", []).append({"apply_id": apply_id, "at": time.time(), "verdicts": verdicts})
        _save_journal(journal_path, journal)


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
