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
import shutil
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..errors import NetprofError
from .root_files import read_regular_capped
from . import trusted_dir
from .trusted_dir import UntrustedDir, component_problem, make_trusted_dir, private_dir, tighten_own_dir

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


MANIFEST = "SHA256SUMS"

# Each distinct "not using this cache" message is said once per process: the TUI and serve
# build loaders more than once.
_already_said: set[str] = set()


def _say_once(log: Callable[[str], None], message: str) -> None:
    if message not in _already_said:
        _already_said.add(message)
        log(message)


def _stderr(message: str) -> None:
    print(f"netprof: {message}", file=sys.stderr)


def manifest_text(files: dict[str, str]) -> str:
    """sha256sum-style lines of exactly the files netprof generates."""
    return "".join(f"{hashlib.sha256(content.encode()).hexdigest()}  {rel}\n"
                   for rel, content in sorted(files.items()))


def tree_problem(root: Path, files: dict[str, str]) -> str | None:
    """Why the shim tree at `root` is not exactly what netprof generates for `files`, or None.

    Every directory and file must be trusted (owner, not writable by others, no symlinks),
    the file set must be exactly the generated one plus the manifest (an extra header would
    be found by the compiler's include path), and every file's digest must match both the
    manifest and the content netprof would write now.
    """
    manifest = manifest_text(files)
    # rel → the sha256 netprof records for it; the manifest itself must be exactly that text.
    digests = {rel: digest for digest, rel in (line.split("  ", 1) for line in manifest.splitlines())}
    digests[MANIFEST] = hashlib.sha256(manifest.encode()).hexdigest()
    sizes = {**{rel: len(content.encode()) for rel, content in files.items()}, MANIFEST: len(manifest.encode())}
    info = os.lstat(root)
    problem = component_problem(root, info, allow_sticky=False)
    if problem or not stat.S_ISDIR(info.st_mode):
        return problem or f"{root} is not a directory"
    seen: set[str] = set()
    for directory, subdirs, names in os.walk(root, followlinks=False):
        for name in [*subdirs, *names]:
            path = Path(directory, name)
            info = os.lstat(path)
            problem = component_problem(path, info, allow_sticky=False)
            if problem:
                return problem
            if stat.S_ISDIR(info.st_mode):
                continue
            rel = str(path.relative_to(root))
            if not stat.S_ISREG(info.st_mode) or rel not in digests:
                return f"{path} is not a file netprof generates"
            seen.add(rel)
            content = read_regular_capped(path, sizes[rel])
            if content is None or hashlib.sha256(content).hexdigest() != digests[rel]:
                return f"{path} differs from what netprof generates (sha256 mismatch)"
    missing = sorted(set(digests) - seen)
    return f"{root / missing[0]} is missing" if missing else None


def ensure_shim(cache_dir: Path | None = None, release: str | None = None, *,
                private_dirs: tuple[Path, ...] | None = None,
                log: Callable[[str], None] = _stderr) -> Path:
    """Write the shim tree (once per kernel release and shim format) and return its root.

    The cache is used only when nobody but root (or this user) can change it and its tree is
    exactly what netprof generates (see trusted_dir.py, tree_problem()); otherwise, or when
    it cannot be written (a read-only home), the tree is built in a private directory and
    that is said once. Written into a temporary directory and renamed into place, so two
    netprof processes starting together never see a half-written tree.
    """
    release = release or platform.release()
    files = shim_files(release)
    digest = hashlib.sha256(
        repr((SHIM_FORMAT, sorted(files.items()))).encode()
    ).hexdigest()[:12]
    name = f"{release}-{digest}"
    cache = Path(cache_dir or default_cache_dir())
    try:
        tightened = tighten_own_dir(cache)
        if tightened:
            _say_once(log, f"kernel-shim cache: {tightened}")
        return _ensure_tree(make_trusted_dir(cache / "kernel-shim"), name, files, log)
    except (UntrustedDir, OSError) as exc:
        reason = str(exc) if isinstance(exc, UntrustedDir) else f"cannot write it: {exc.strerror or exc}"
    try:
        private = private_dir(trusted_dir.PRIVATE_DIRS if private_dirs is None else private_dirs)
        root = _ensure_tree(make_trusted_dir(private / "kernel-shim"), name, files, log)
    except (UntrustedDir, OSError) as exc:
        raise NetprofError(f"cannot build the kernel-header shim: the cache {cache} is not usable ({reason}) "
                           f"and neither is a private directory ({exc})") from None
    _say_once(log, f"not using the kernel-shim cache {cache} ({reason}); built it in {root.parent} instead")
    return root


def _ensure_tree(parent: Path, name: str, files: dict[str, str], log: Callable[[str], None]) -> Path:
    """The verified tree `parent/name`, built (or rebuilt, when it fails verification) there."""
    root = parent / name
    if os.path.lexists(root):
        problem = tree_problem(root, files)
        if problem is None:
            return root
        _say_once(log, f"rebuilding the kernel-shim tree {root}: {problem}")
        _discard(root, parent)
    staging = Path(tempfile.mkdtemp(prefix=".shim-", dir=parent))
    try:
        for rel, content in {**files, MANIFEST: manifest_text(files)}.items():
            path = staging / rel
            for directory in reversed([p for p in path.relative_to(staging).parents if str(p) != "."]):
                (staging / directory).mkdir(mode=0o755, exist_ok=True)
                os.chmod(staging / directory, 0o755)  # explicit: a umask of 0 would leave 0777
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
            with os.fdopen(fd, "w") as handle:
                os.fchmod(handle.fileno(), 0o644)
                handle.write(content)
        staging.rename(root)
    except OSError:
        shutil.rmtree(staging, ignore_errors=True)
        if not os.path.lexists(root):
            raise
        # Another process won the race; its tree is checked like any other below.
    problem = tree_problem(root, files)
    if problem:
        raise UntrustedDir(problem)
    return root


def _discard(root: Path, parent: Path) -> None:
    """Move a failed tree aside (so the name is free at once) and remove it; rmtree never
    follows a symlink it finds inside."""
    if os.path.islink(root) or not os.path.isdir(root):
        os.unlink(root)
        return
    graveyard = Path(tempfile.mkdtemp(prefix=".discarded-", dir=parent))
    os.rename(root, graveyard / "tree")
    shutil.rmtree(graveyard, ignore_errors=True)
