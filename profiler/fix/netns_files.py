"""Reaching the file a target names, as its network namespace sees it, and reading and writing
it (see profiler/fix/apply.py's docstring for why /proc/sys and /sys need different ways in).

/proc/sys/net answers for the netns of the thread that opens it: sysctls are read and written
from a thread that setns'd into the pod (profiler.system.netns). /sys/class/net answers for
the netns of whoever mounted that sysfs: queue files are reached through a fresh sysfs
instance made by the setns'd thread (a detached fsopen/fsmount mount, or, before Linux 5.2, a
sysfs mounted over /sys in a mount namespace private to that thread).
"""
from __future__ import annotations

import ctypes
import errno
import os
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn, TypeVar

from ..kernel.root_files import resolve_in_root
from ..system.netns import run_in_netns
from .targets import Refused, Target, Unavailable

T = TypeVar("T")

# The process's own netns, opened from inside the worker thread (/proc/self is the thread
# group, so this is where the process lives, whatever the thread did before).
_OWN_NETNS = "/proc/self/ns/net"


def is_live(root: Path) -> bool:
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
USE_DETACHED_SYSFS = True


@contextmanager
def _fresh_sysfs() -> Iterator[Path]:
    """The root of a sysfs that shows the calling thread's network namespace."""
    if USE_DETACHED_SYSFS:
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


def _resolve(base: Path, target: Target) -> Path:
    resolved = resolve_in_root(base, target.relpath)
    area = f"/{target.area}"
    if resolved is None:
        raise Unavailable(f"{target.shown}: not found in {area} of that netns (or a link leading out of {area})")
    relative = os.path.relpath(resolved, os.path.abspath(base))
    if not target.resolves_to.fullmatch(relative):
        raise Unavailable(f"{target.shown}: resolves to {area}/{relative}, which is not an allowed target")
    return resolved


def _thread_netns_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


def at_target(target: Target, root: Path, op: Callable[[Path], T],
               netns_inode: int | None = None) -> T:
    """op(path of the target's file), with the file as the target's netns sees it."""
    if not is_live(root):
        if target.netns is not None:
            raise Unavailable(f"{target.shown}: a netns change can only be made on the live node (root /)")
        return op(_resolve(Path(root) / target.area, target))

    def in_netns() -> T:
        if netns_inode is not None and _thread_netns_inode() != netns_inode:
            raise Unavailable(f"netns {target.netns or 'of the node'} was replaced by another one "
                               "since the plan was checked")
        if target.area == "proc":
            return op(_resolve(Path("/proc"), target))
        with _fresh_sysfs() as sysfs:
            return op(_resolve(sysfs, target))

    return run_in_netns(target.netns or _OWN_NETNS, in_netns)


def read_value(path: Path) -> str:
    # O_NOFOLLOW: the path was resolved link by link; O_NONBLOCK: a FIFO in a fake tree.
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Unavailable(f"{path} is not a regular file")
        chunks = []
        while chunk := os.read(fd, 1 << 16):
            chunks.append(chunk)
            if sum(map(len, chunks)) > 1 << 20:
                raise Unavailable(f"{path} is larger than any setting")
        return b"".join(chunks).decode("utf-8", errors="replace").strip()
    finally:
        os.close(fd)


def write_value(path: Path, value: str) -> None:
    # One write(2) of the whole value from offset 0: that is what sysctl and sysfs stores
    # parse (a second write would be parsed on its own). O_TRUNC matters for fake trees only.
    data = f"{value}\n".encode()
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise Unavailable(f"{path} is not a regular file")
        written = os.write(fd, data)
        if written != len(data):
            raise OSError(errno.EIO, f"short write ({written} of {len(data)} bytes)")
    finally:
        os.close(fd)


def read_for_check(path: Path) -> tuple[str, bool]:
    # effective_ids: a read-only sysctl (nf_conntrack_max inside a pod netns) shows mode 0444
    # and refuses even root, which access(2) with AT_EACCESS reports.
    return read_value(path), os.access(path, os.W_OK, effective_ids=True)


def error_text(exc: BaseException) -> str:
    if isinstance(exc, OSError):
        where = f" ({exc.filename})" if exc.filename else ""
        return f"{exc.strerror or exc}{where}"
    return str(exc)


def netns_inode_of(netns: str | None, root: Path) -> int | None:
    """The inode of the netns a change targets; Refused when it is gone or not a netns."""
    if not is_live(root):
        if netns is not None:
            raise Refused("a netns change can only be checked on the live node (root /)")
        return None
    try:
        found = os.stat(netns or _OWN_NETNS)
    except FileNotFoundError:
        raise Refused(f"netns {netns} is gone (the pod was deleted or restarted?)") from None
    except OSError as exc:
        raise Refused(f"cannot stat netns {netns}: {exc.strerror}") from None
    if found.st_dev != os.stat(_OWN_NETNS).st_dev:
        raise Refused(f"{netns} is not a namespace file")
    return found.st_ino
