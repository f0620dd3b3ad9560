"""Run a reader inside other network namespaces, in-process, without executing anything.

Per-netns counters (/proc/net/netstat, conntrack statistics, inet_diag) answer for the
network namespace of the *thread* that asks. So a short-lived thread enters the pod's netns
with setns(2), runs the reader, and ends; the rest of the process never changes namespace.
No program from the pod or the node is executed, and nothing in the pod's filesystem is read:
the only path opened is the namespace handle (/run/netns/<name> or /proc/<pid>/ns/net), and
readers see the pod only through /proc/thread-self/net, /proc/sys/net and netlink.

`run_in_netns` visits one namespace. `read_in_each_netns` visits many in turn from one
thread — the per-interval readers use it, so that a pass over N pods costs one thread, not N.
"""
from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Callable, TypeVar, Union

from ..errors import NetprofError
from ..kernel.kernel_files import read_kernel_text

CLONE_NEWNET = 0x40000000
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _enter(netns: Path | str) -> None:
    """Move the calling thread into the netns at `netns`."""
    # O_NOFOLLOW is not applicable to /proc ns links (they are magic links that must be
    # followed); callers pass paths from /run/netns or /proc/<pid>/ns only. O_NONBLOCK: a FIFO
    # planted under /run/netns must not hang the opener (setns then refuses it: EINVAL).
    fd = os.open(netns, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    try:
        _setns(fd)
    finally:
        os.close(fd)


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
            _enter(netns)
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


class NetnsBatchTimeout(NetprofError):
    """The batch ran out of time before this namespace was read (or while reading it)."""


# One netns' result in a batch: what its reader returned, or the exception it ended with.
NetnsResult = Union[T, BaseException]
# Reads one reader in each of many namespaces (`read_in_each_netns` with the reader bound);
# the sources take one of these so that tests can pass readings without namespaces.
BatchReader = Callable[[Mapping[int, Path]], Mapping[int, NetnsResult[T]]]


def read_in_each_netns(paths: Mapping[int, Path], reader: Callable[[], T],
                       timeout_s: float = 5.0) -> dict[int, NetnsResult[T]]:
    """Call `reader()` inside each netns of `paths` (key → /run/netns/<name> or
    /proc/<pid>/ns/net), all from one thread that enters them in turn; key → the reader's
    result, or the exception that ended that namespace's visit.

    FileNotFoundError / ProcessLookupError mean the namespace is gone (normal: pods vanish
    mid-capture); one namespace's failure does not stop the others. `timeout_s` bounds the
    whole batch: if it runs over, what was read is returned and every namespace not read yet
    is a NetnsBatchTimeout; the worker (a daemon) stops after the reader it is stuck in.
    """
    if not paths:
        return {}
    visits = list(paths.items())  # the caller's mapping may change once we return
    results: dict[int, NetnsResult[T]] = {}
    lock = threading.Lock()
    abandoned = threading.Event()

    def visit_each() -> None:
        for key, path in visits:
            if abandoned.is_set():
                return
            try:
                _enter(path)
                result: NetnsResult[T] = reader()
            except BaseException as exc:  # this namespace's problem; the next may be fine
                result = exc
            with lock:
                if abandoned.is_set():
                    return
                results[key] = result

    # Switching from one pod's netns straight to the next needs no way back: the thread
    # ends after the batch and its namespace goes with it.
    thread = threading.Thread(target=visit_each, name="netprof-netns-batch", daemon=True)
    thread.start()
    thread.join(timeout_s)
    with lock:
        abandoned.set()
        done = dict(results)
    for key, path in visits:
        if key not in done:
            done[key] = NetnsBatchTimeout(f"reading inside netns {path} did not finish within "
                                          f"the batch's {timeout_s:g}s")
    return done


def read_proc_net(name: str) -> str:
    """A /proc/net file as the calling thread's netns sees it."""
    return read_kernel_text(Path("/proc/thread-self/net", name))
