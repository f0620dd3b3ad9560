"""The minimal kernel-header tree that lets BCC compile tracepoint programs without headers.

BCC insists on a kernel include tree (it fails with "Unable to find kernel headers" on nodes
that ship none: Talos, Bottlerocket, COS, and the VMs netprof is built on). Tracepoint
programs that never include kernel struct definitions need almost nothing from it: the
integer typedefs, kconfig/version macros, the uapi bpf.h that BCC itself ships, and a few
files BCC's helpers.h includes unconditionally. netprof writes that tree at start-up into a
cache directory keyed by kernel release and points BCC at it with BCC_KERNEL_SOURCE.

Kernel structs are never declared here: their field offsets come from BTF (see offsets.py).
"""
from __future__ import annotations

import hashlib
import os
import platform
import tempfile
from pathlib import Path

SHIM_FORMAT = 1  # bump when the file set changes, so stale caches are rebuilt

_TYPES_H = """\
#ifndef _NETPROF_SHIM_TYPES_H
#define _NETPROF_SHIM_TYPES_H
typedef signed char __s8;
typedef unsigned char __u8;
typedef short __s16;
typedef unsigned short __u16;
typedef int __s32;
typedef unsigned int __u32;
typedef long long __s64;
typedef unsigned long long __u64;
typedef __s8 s8;
typedef __u8 u8;
typedef __s16 s16;
typedef __u16 u16;
typedef __s32 s32;
typedef __u32 u32;
typedef __s64 s64;
typedef __u64 u64;
typedef __u16 __le16;
typedef __u16 __be16;
typedef __u32 __le32;
typedef __u32 __be32;
typedef __u64 __le64;
typedef __u64 __be64;
typedef __u16 __sum16;
typedef __u32 __wsum;
typedef __u64 __aligned_u64 __attribute__((aligned(8)));
typedef unsigned long uintptr_t;
typedef unsigned long size_t;
typedef long ssize_t;
typedef _Bool bool;
#define true 1
#define false 0
#define NULL ((void *)0)
#endif
"""

_KCONFIG_H = """\
#ifndef _NETPROF_SHIM_KCONFIG_H
#define _NETPROF_SHIM_KCONFIG_H
/* BCC's helpers.h guards its map definitions behind CONFIG_BPF_SYSCALL. */
#define CONFIG_BPF_SYSCALL 1
/* From the kernel's compiler_types.h, which the shim does not carry. */
#ifndef __always_inline
#define __always_inline inline __attribute__((always_inline))
#endif
#include <linux/types.h>
#endif
"""

_LOG2_H = """\
#ifndef _NETPROF_SHIM_LOG2_H
#define _NETPROF_SHIM_LOG2_H
/* BPF_STACK_TRACE sizes its map with roundup_pow_of_two(); it must be a constant expression. */
#define __np_rup1(n) ((n) | ((n) >> 1))
#define __np_rup2(n) (__np_rup1(n) | (__np_rup1(n) >> 2))
#define __np_rup4(n) (__np_rup2(n) | (__np_rup2(n) >> 4))
#define __np_rup8(n) (__np_rup4(n) | (__np_rup4(n) >> 8))
#define __np_rup16(n) (__np_rup8(n) | (__np_rup8(n) >> 16))
#define roundup_pow_of_two(n) ((n) <= 1 ? 1 : (__np_rup16((unsigned long)(n) - 1) + 1))
#endif
"""

_PAGE_H = """\
#ifndef _NETPROF_SHIM_PAGE_H
#define _NETPROF_SHIM_PAGE_H
#define PAGE_SHIFT 12
#define PAGE_SIZE (1UL << PAGE_SHIFT)
#endif
"""

# x86-64 register frame; BCC's helpers reference struct pt_regs even in tracepoint programs.
_PTRACE_H = """\
#ifndef _NETPROF_SHIM_PTRACE_H
#define _NETPROF_SHIM_PTRACE_H
struct pt_regs {
    unsigned long r15, r14, r13, r12, bp, bx, r11, r10, r9, r8;
    unsigned long ax, cx, dx, si, di, orig_ax, ip, cs, flags, sp, ss;
};
#endif
"""

_EMPTY = "/* intentionally empty: included by BCC's helpers.h, nothing in it is used */\n"


def kernel_version_code(release: str) -> int:
    """LINUX_VERSION_CODE for a release string such as '6.18.44-fc-v669'."""
    numbers = []
    for part in release.split("-")[0].split(".")[:3]:
        digits = "".join(ch for ch in part if ch.isdigit())
        numbers.append(int(digits) if digits else 0)
    while len(numbers) < 3:
        numbers.append(0)
    major, minor, patch = numbers
    return (major << 16) + (minor << 8) + min(patch, 255)


def shim_files(release: str) -> dict[str, str]:
    """Relative path → content of every file of the shim tree."""
    version_h = (
        f"#define LINUX_VERSION_CODE {kernel_version_code(release)}\n"
        "#define KERNEL_VERSION(a, b, c) (((a) << 16) + ((b) << 8) + ((c) > 255 ? 255 : (c)))\n"
    )
    return {
        "include/linux/kconfig.h": _KCONFIG_H,
        "include/linux/types.h": _TYPES_H,
        "include/linux/version.h": version_h,
        "include/linux/log2.h": _LOG2_H,
        "include/linux/bpf_common.h": _EMPTY,
        "include/uapi/linux/bpf.h": "#include <bcc/bpf.h>\n",
        "include/uapi/linux/ptrace.h": _PTRACE_H,
        "include/uapi/linux/if_packet.h": _EMPTY,
        "include/uapi/linux/if_ether.h": _EMPTY,
        "include/asm/page.h": _PAGE_H,
        "arch/x86/include/asm/page.h": _PAGE_H,
    }


def default_cache_dir() -> Path:
    if os.environ.get("NETPROF_CACHE_DIR"):
        return Path(os.environ["NETPROF_CACHE_DIR"])
    xdg = os.environ.get("XDG_CACHE_HOME")
    return Path(xdg) / "netprof" if xdg else Path.home() / ".cache" / "netprof"


def ensure_shim(cache_dir: Path | None = None, release: str | None = None) -> Path:
    """Write the shim tree (once per kernel release and shim format) and return its root.

    Written into a temporary directory and renamed into place, so two netprof processes
    starting together never see a half-written tree.
    """
    release = release or platform.release()
    files = shim_files(release)
    digest = hashlib.sha256(
        repr((SHIM_FORMAT, sorted(files.items()))).encode()
    ).hexdigest()[:12]
    preferred = cache_dir or default_cache_dir()
    try:
        return _write_shim(preferred / "kernel-shim" / f"{release}-{digest}", files)
    except OSError:
        # A read-only home (a VM over a read-only root, a locked-down container): the shim
        # is ~10 small files, cheap to write anew into this process's own temp directory.
        fallback = Path(tempfile.gettempdir()) / f"netprof-{os.getuid()}"
        return _write_shim(fallback / "kernel-shim" / f"{release}-{digest}", files)


def _write_shim(root: Path, files: dict[str, str]) -> Path:
    if (root / "include/linux/kconfig.h").is_file():
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".shim-", dir=root.parent))
    for rel, content in files.items():
        path = staging / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    try:
        staging.rename(root)
    except OSError:
        # Another process won the race; its tree is identical.
        _remove_tree(staging)
    return root


def _remove_tree(path: Path) -> None:
    for child in sorted(path.rglob("*"), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    path.rmdir()
