"""The bpf(2) system call, for the few commands BCC does not wrap the way netprof needs
(switching run-time statistics on; loading a BTF-typed tracepoint program)."""
from __future__ import annotations

import ctypes
import os
import platform

BPF_SYSCALL_NUMBERS = {"x86_64": 321, "aarch64": 280, "arm64": 280}
# A zeroed union bpf_attr at least as big as any command netprof sends; the kernel accepts a
# larger attr as long as the bytes it does not know are zero.
BPF_ATTR_SIZE = 128


def bpf(command: int, attr: ctypes.Structure | ctypes.Array) -> int:
    """bpf(command, &attr, BPF_ATTR_SIZE) → its non-negative result; raises OSError."""
    if ctypes.sizeof(attr) > BPF_ATTR_SIZE:
        raise ValueError(f"bpf attr of {ctypes.sizeof(attr)} bytes exceeds {BPF_ATTR_SIZE}")
    number = BPF_SYSCALL_NUMBERS.get(platform.machine())
    if number is None:
        raise OSError(0, f"bpf syscall number unknown on {platform.machine()}")
    padded = (ctypes.c_uint8 * BPF_ATTR_SIZE)()
    ctypes.memmove(padded, ctypes.addressof(attr), ctypes.sizeof(attr))
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    result = libc.syscall(ctypes.c_long(number), ctypes.c_int(command), ctypes.byref(padded),
                          ctypes.c_uint(BPF_ATTR_SIZE))
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return int(result)
