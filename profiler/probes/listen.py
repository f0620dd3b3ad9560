"""The backlog each application asked for in listen(2) (bpf/listen.bpf.c). The SYN-path
kprobe is profiler/probes/listen_syn_path.py.

Hooked by fentry on __sys_listen where the kernel allows it, else by the syscalls:
sys_enter_listen tracepoint, whose presence makes every syscall on the node take the traced
slow path (profiler/kernel/fentry.py says why and what it costs); the probe's `via` says
which, and why not fentry.

The kernel keeps min(backlog, net.core.somaxconn) as the accept-queue limit and forgets the
request; this probe remembers it per (process, fd). Python names the socket with
readlink(/proc/<pid>/fd/<fd>) → `socket:[inode]`, the same inode inet_diag reports, so the
request joins the listener it was made for.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import NetprofError
from ..kernel.fentry import attach_fentry, fentry_refusal
from ..kernel.fentry import hook as fentry_hook
from ..kernel.loader import BpfLoader
from ..kernel.maps import MapLayout, MapReader
from .base import ProbeStatus

TRACEPOINT = "syscalls:sys_enter_listen"
# The kernel function behind listen(2) (Linux 4.17+): fentry there, where the kernel allows it,
# spares every other syscall on the node the syscall tracepoint's slow path (bpf/listen.bpf.c).
FENTRY_FUNCTION = "__sys_listen"
FENTRY_CFLAG = "-DNETPROF_LISTEN_FENTRY"
MAX_LISTEN_CALLS = 4096

# Mirrors struct listen_call_key / struct listen_call in bpf/listen.h.
LISTEN_CALL_KEY = np.dtype([("tgid", "<u4"), ("fd", "<u4")])
LISTEN_CALL = np.dtype([("backlog", "<i4"), ("calls", "<u4"), ("called_ns", "<u8")])


@dataclass(frozen=True)
class ListenCalls:
    """The latest listen() call per (tgid, fd) still in the map (LRU: old ones age out)."""

    keys: np.ndarray    # LISTEN_CALL_KEY
    calls: np.ndarray   # LISTEN_CALL, aligned with keys


class ListenBacklogProbe:
    name = "listen_backlog"

    def __init__(self) -> None:
        self._bpf = None
        self._calls: MapReader | None = None

    def attach(self, loader: BpfLoader) -> ProbeStatus:
        cflags = [f"-DNETPROF_MAX_LISTEN_CALLS={MAX_LISTEN_CALLS}"]
        btf_id = loader.layout.fentry_function_ids.get(FENTRY_FUNCTION)
        fentry_refused = fentry_refusal(FENTRY_FUNCTION, btf_id)
        if fentry_refused is None:
            try:
                self._bpf = self._load_fentry(loader, [*cflags, FENTRY_CFLAG], btf_id)
            except NetprofError as exc:
                fentry_refused = str(exc)
        via = listen_via(fentry_refused)
        if self._bpf is None:
            try:
                self._bpf = loader.compile("listen", cflags)
            except NetprofError as exc:
                return ProbeStatus(self.name, False, via, str(exc))
        self._calls = MapReader(self._bpf[b"listen_calls"], MapLayout(LISTEN_CALL_KEY, LISTEN_CALL))
        return ProbeStatus(self.name, True, via)

    @staticmethod
    def _load_fentry(loader: BpfLoader, cflags: list[str], btf_id: int):
        """Compile for fentry and attach it; raises NetprofError, leaving nothing loaded."""
        bpf = loader.compile("listen", cflags)
        try:
            attach_fentry(bpf, FENTRY_FUNCTION, btf_id)
        except NetprofError:
            bpf.cleanup()
            raise
        return bpf

    def read(self) -> ListenCalls:
        if self._calls is None:
            raise RuntimeError("read() before a successful attach()")
        keys, calls = self._calls.read()
        return ListenCalls(keys, calls)

    def detach(self) -> None:
        if self._bpf is not None:
            self._bpf.cleanup()
            self._bpf = None
            self._calls = None


def listen_via(fentry_refused: str | None) -> str:
    """The probe's method: fentry where it loaded, else the tracepoint and why not fentry."""
    if fentry_refused is None:
        return fentry_hook(FENTRY_FUNCTION)
    return f"tracepoint:{TRACEPOINT} ({fentry_refused})"


def parse_socket_link(target: str) -> int | None:
    """The inode in a /proc/<pid>/fd link target `socket:[12345]`, or None for anything else."""
    if target.startswith("socket:[") and target.endswith("]"):
        digits = target[8:-1]
        if digits.isdigit():
            return int(digits)
    return None


def socket_inode(pid: int, fd: int, proc: Path = Path("/proc")) -> int | None:
    """The socket inode behind a process's fd. readlink only: the link is never opened or
    followed, so nothing of the pod's filesystem is touched. None when the process or the fd
    is gone (a short-lived process: normal) or the fd is not a socket."""
    try:
        return parse_socket_link(os.readlink(proc / str(pid) / "fd" / str(fd)))
    except OSError:
        return None
