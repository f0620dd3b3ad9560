"""return_freed_heap: freed C heap memory goes back to the kernel (what a long-running
netprof needs after BCC's compiler has run in its process)."""
from __future__ import annotations

import ctypes
import ctypes.util
import platform

import pytest

from profiler.system.heap import return_freed_heap


def _anon_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1])
    raise AssertionError("no RssAnon in /proc/self/status")


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="malloc_trim is glibc's")
def test_freed_small_blocks_below_a_live_one_are_returned():
    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    # 64 MiB in small blocks (the heap, not mmap), touched so they are resident, then one
    # block above them kept alive: free() alone cannot shrink the heap from its top.
    blocks = []
    for _ in range(64 * 1024):
        block = libc.malloc(1024)
        libc.memset(block, 1, 1024)
        blocks.append(block)
    pin = libc.malloc(1024)
    for block in blocks:
        libc.free(block)
    before = _anon_kib()
    released = return_freed_heap()
    after = _anon_kib()
    libc.free(pin)
    assert released
    assert before - after > 32 * 1024, (before, after)
