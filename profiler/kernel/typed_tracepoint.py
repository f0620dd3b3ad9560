"""BTF-typed raw tracepoints (tp_btf): a program BCC compiled, loaded and attached here.

Why. On a raw tracepoint the verifier sees the program's arguments as plain integers, so
every read of a kernel structure (skb->dev, sk->skc_net, net->ns.inum) is a
bpf_probe_read_kernel call, ≈35–40 ns each on the benchmark machine (bench/README.md), and
a drop's pod takes two or three of them. A tp_btf program runs on the same hook through the
same dispatch, but the verifier types each argument from the kernel's
`btf_trace_<tracepoint>` prototype: a plain load through it is one instruction, which the
kernel makes fault-safe (a load that faults gives 0, as a failed probe read does).

Why not BCC. BCC 0.26 compiles such a program but cannot load it: its loader gives a
BPF_PROG_TYPE_TRACING program the attach type its name's prefix says (kfunc__ is fentry,
kretfunc__ fexit, lsm__ ...), and no prefix means tp_btf. So the program is a plain C
function, whose name no BCC prefix starts (BCC then neither loads nor attaches it); its
instructions, map fds already in place, come from BPF.dump_func; this module loads them
with bpf(BPF_PROG_LOAD) as TRACING / BPF_TRACE_RAW_TP against the typedef's BTF id and
attaches with bpf(BPF_RAW_TRACEPOINT_OPEN).

The two fds are handed to the BCC object (`funcs`, `raw_tracepoint_fds`), so its cleanup()
detaches and closes them as it does its own, and the cost meter finds the program where it
finds every other one. The load and the attach are shared with fentry programs
(kernel/fentry.py), which differ only in their attach type and target.
"""
from __future__ import annotations

import ctypes
import errno
import os

from ..errors import NetprofError
from .bpf_syscall import bpf as bpf_syscall

BPF_PROG_LOAD = 5
BPF_RAW_TRACEPOINT_OPEN = 17
BPF_PROG_TYPE_TRACING = 26
BPF_TRACE_RAW_TP = 23
BPF_TRACE_FENTRY = 24
# BCC's function-name prefix for these programs; cost.hook_of_function reads it back.
FUNCTION_PREFIX = "tp_btf__"
LOG_SIZE = 1 << 20   # the verifier's log, asked for only to say why a load was refused
BPF_OBJ_NAME_LEN = 16


class TypedTracepointError(NetprofError):
    """The kernel refused to load or attach a tp_btf program."""


class _ProgLoadAttr(ctypes.Structure):
    """union bpf_attr for BPF_PROG_LOAD, as far as attach_btf_obj_fd (Linux 5.11)."""
    _fields_ = [
        ("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64), ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32), ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32), ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * BPF_OBJ_NAME_LEN), ("prog_ifindex", ctypes.c_uint32),
        ("expected_attach_type", ctypes.c_uint32), ("prog_btf_fd", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32), ("func_info", ctypes.c_uint64),
        ("func_info_cnt", ctypes.c_uint32), ("line_info_rec_size", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64), ("line_info_cnt", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32), ("attach_btf_obj_fd", ctypes.c_uint32),
    ]


class _RawTracepointOpenAttr(ctypes.Structure):
    # name 0: a TRACING program's tracepoint is the one its attach_btf_id names.
    _fields_ = [("name", ctypes.c_uint64), ("prog_fd", ctypes.c_uint32)]


def function_name(tracepoint: str) -> str:
    """The C function a program for `tracepoint` is written as (bpf/drops.bpf.c)."""
    return FUNCTION_PREFIX + tracepoint


def verifier_reason(log: bytes) -> str:
    """The verifier's last word, printable ASCII only (the log is kernel text, and it ends
    up in a probe's status, which reaches terminals), or "" when it said nothing."""
    for line in reversed(log.split(b"\0", 1)[0].splitlines()):
        text = "".join(ch for ch in line.decode("ascii", "replace") if " " <= ch <= "~").strip()
        if text and not text.startswith(("processed ", "verification time")):
            return text[:160]
    return ""


def load_tracing_program(insns: bytes, license: bytes, name: str, attach_type: int, btf_id: int,
                         hook: str) -> int:
    """bpf(BPF_PROG_LOAD) of `insns` as a TRACING program of `attach_type` against kernel
    BTF id `btf_id` → program fd. `hook` names it in the error ("tp_btf:kfree_skb")."""
    code = ctypes.create_string_buffer(insns, len(insns))
    license_text = ctypes.create_string_buffer(license)
    attr = _ProgLoadAttr(
        prog_type=BPF_PROG_TYPE_TRACING, insn_cnt=len(insns) // 8, insns=ctypes.addressof(code),
        license=ctypes.addressof(license_text), prog_name=name.encode()[:BPF_OBJ_NAME_LEN - 1],
        expected_attach_type=attach_type, attach_btf_id=btf_id)
    try:
        return bpf_syscall(BPF_PROG_LOAD, attr)
    except OSError as first:
        refused = first
    # Again with the verifier's log, only to say why: asking for it on every load costs the
    # kernel a megabyte and the formatting of every instruction.
    log = ctypes.create_string_buffer(LOG_SIZE)
    attr.log_level, attr.log_size, attr.log_buf = 1, LOG_SIZE, ctypes.addressof(log)
    try:
        return bpf_syscall(BPF_PROG_LOAD, attr)   # refused once, accepted now: take it
    except OSError as again:
        refused = again if again.errno != errno.ENOSPC else refused
    reason = verifier_reason(log.raw)
    raise TypedTracepointError(
        f"the kernel refused {hook} ({errno.errorcode.get(refused.errno or 0, refused.errno)}"
        f"{': ' + reason if reason else ''})")


def open_tracing_link(prog_fd: int, hook: str) -> int:
    """Attach a loaded TRACING program where its attach_btf_id says → the link fd; on
    refusal closes the program and raises TypedTracepointError with the kernel's errno."""
    try:
        return bpf_syscall(BPF_RAW_TRACEPOINT_OPEN, _RawTracepointOpenAttr(prog_fd=prog_fd))
    except OSError as exc:
        os.close(prog_fd)
        raise TypedTracepointError(
            f"the kernel refused to attach {hook} ({errno.errorcode.get(exc.errno or 0, exc.errno)})") from None


def attach_tracing_function(bpf, c_function: str, prog_name: str, attach_type: int, btf_id: int,
                            hook: str) -> int:
    """Load BCC object `bpf`'s C function `c_function` as a TRACING program of `attach_type`
    on `btf_id` and attach it → the link fd, which the caller hands to the BCC object where
    its cleanup() closes it. The program fd goes to `bpf.funcs`, where BCC and the cost
    meter find it. Raises TypedTracepointError with the kernel's reason."""
    from bcc.libbcc import lib

    name = c_function.encode()
    prog_fd = load_tracing_program(bpf.dump_func(name), lib.bpf_module_license(bpf.module), prog_name,
                                   attach_type, btf_id, hook)
    link_fd = open_tracing_link(prog_fd, hook)
    bpf.funcs[name] = type(bpf).Function(bpf, name, prog_fd)
    return link_fd


def attach_typed_tracepoint(bpf, tracepoint: str, btf_id: int) -> None:
    """Load BCC object `bpf`'s function for `tracepoint` (function_name) as tp_btf, btf_id
    being the kernel's `btf_trace_<tracepoint>` typedef, and attach it. On success the BCC
    object owns both fds; raises TypedTracepointError with the kernel's reason."""
    link_fd = attach_tracing_function(bpf, function_name(tracepoint), tracepoint, BPF_TRACE_RAW_TP, btf_id,
                                      f"tp_btf:{tracepoint}")
    bpf.raw_tracepoint_fds[tracepoint.encode()] = link_fd
