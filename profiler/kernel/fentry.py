"""fentry programs: a BPF program on a kernel function's entry, through a BPF trampoline.

Why. Some of what netprof records is said once, in a system call (listen(2)'s backlog).
Its syscall tracepoint has a price far beyond its own events: the first program on any
syscall tracepoint sets the syscall-tracepoint work flag on every task of the node, and
from then on every system call of every process takes the traced slow path, listen or not
(55–77 ns per syscall on the benchmark machine: `python -m bench --sections micro`,
bench/README.md). An fentry program on the kernel function behind the syscall runs only
when that function does, and costs every other syscall nothing.

Where it loads. fentry needs BTF (the function's id is the attach target), a BPF trampoline
(x86_64 with DYNAMIC_FTRACE_WITH_DIRECT_CALLS, arm64 since 6.0) and a kernel that lets the
program load: some refuse it outright (the 6.18 this project is built on answers EPERM). So
`fentry_refusal` first loads and attaches a two-instruction program on the same function,
which costs no compile; only where that works is the real program compiled for fentry.

How. As for tp_btf (kernel/typed_tracepoint.py), BCC compiles the program as a plain C
function and this module loads its instructions as BPF_PROG_TYPE_TRACING with the fentry
attach type, and attaches it with BPF_RAW_TRACEPOINT_OPEN. (BCC's own KFUNC_PROBE would load
it too, but where the kernel refuses it raises "Need super-user privileges", which would send
an operator after the wrong problem.) The two fds go to the BCC object, whose cleanup()
closes them with its own.
"""
from __future__ import annotations

import os

from .typed_tracepoint import (
    BPF_TRACE_FENTRY, TypedTracepointError, attach_tracing_function, load_tracing_program, open_tracing_link,
)

# BCC's function-name prefix for these programs; cost.hook_of_function reads it back.
FUNCTION_PREFIX = "fentry__"
# r0 = 0; exit: the least program the verifier accepts, for asking the kernel whether fentry
# on a function loads and attaches at all.
_RETURN_ZERO = bytes([0xB7, 0, 0, 0, 0, 0, 0, 0, 0x95, 0, 0, 0, 0, 0, 0, 0])

_refusals: dict[int, str | None] = {}


def function_name(kernel_function: str) -> str:
    """The C function a program on `kernel_function`'s entry is written as."""
    return FUNCTION_PREFIX + kernel_function


def hook(kernel_function: str) -> str:
    return f"fentry:{kernel_function}"


def fentry_refusal(kernel_function: str, btf_id: int | None) -> str | None:
    """None when an fentry program on the function with BTF id `btf_id` loads and attaches
    here; else why not, e.g. "the kernel refused fentry:__sys_listen (EPERM)" (btf_id None:
    BTF has no such function). Asked once per function per process: the answer is the
    kernel's and does not change."""
    if btf_id is None:
        return f"this kernel's BTF has no function {kernel_function}"
    if btf_id not in _refusals:
        try:
            prog_fd = load_tracing_program(_RETURN_ZERO, b"GPL", kernel_function, BPF_TRACE_FENTRY, btf_id,
                                           hook(kernel_function))
            os.close(open_tracing_link(prog_fd, hook(kernel_function)))
            os.close(prog_fd)
            _refusals[btf_id] = None
        except TypedTracepointError as exc:
            _refusals[btf_id] = str(exc)
    return _refusals[btf_id]


def attach_fentry(bpf, kernel_function: str, btf_id: int) -> None:
    """Load BCC object `bpf`'s function for `kernel_function` (function_name) as fentry on it
    and attach it. On success the BCC object owns both fds; raises TypedTracepointError with
    the kernel's reason."""
    link_fd = attach_tracing_function(bpf, function_name(kernel_function), kernel_function, BPF_TRACE_FENTRY,
                                      btf_id, hook(kernel_function))
    # BCC's cleanup() closes kfunc_entry_fds' fds (detach_kfunc), under BCC's own prefix.
    bpf.kfunc_entry_fds[b"kfunc__" + kernel_function.encode()] = link_fd
