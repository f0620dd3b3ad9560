"""Run a reader inside another network namespace, in-process, without executing anything.

Per-netns counters (/proc/net/netstat, conntrack statistics, inet_diag) answer for the
network namespace of the *thread* that asks. So a short-lived thread enters the pod's netns
with setns(2), runs the reader, and ends; the rest of the process never changes namespace.
No program from the pod or the node is executed, and nothing in the pod's filesystem is read.
"""
from __future__ import annotations

import ctypes
import os
import threading
from pathlib import Path
from typing import Callable, TypeVar

from ..errors import NetprofError

CLONE_NEWNET = 0x40000000
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def run_in_netns(netns: Path | str, reader: Callable[[], T], timeout_s: float = 5.0) -> T:
    """Call `reader()` in a thread that has joined the netns at `netns` (a /run/netns/<name>
    bind mount or a /proc/<pid>/ns/net link) and return its result or raise its exception.

    Raises FileNotFoundError / ProcessLookupError when the namespace is gone: pods vanish
    mid-capture and callers treat that as normal.
    """
    result: list[T] = []
    error: list[BaseException] = []

    def enter_and_read() -> None:
        try:
            # O_NOFOLLOW is not applicable to /proc ns links (they are magic links that must
            # be followed); callers pass paths from /run/netns or /proc/<pid>/ns only.
            fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
            try:
                _setns(fd)
            finally:
                os.close(fd)
            result.append(reader())
        except BaseException as exc:  # handed to the caller's thread
            error.append(exc)

    # The thread dies after the read: its namespace goes with it, no need to switch back.
    thread = threading.Thread(target=enter_and_read, name="netprof-netns", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if thread.is_alive():
        raise NetprofError(f"reading inside netns {netns} took longer than {timeout_s:g}s")
    if error:
        raise error[0]
    return result[0]


def read_proc_net(name: str) -> str:
    """A /proc/net file as the calling thread's netns sees it."""
    return Path("/proc/thread-self/net", name).read_text()
