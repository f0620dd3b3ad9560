"""Reading tracefs, /proc and /sys files so that a hostile or broken tree cannot hang netprof.

A tracefs whose `format` files were FIFOs blocked netprof for 40 s: `Path.read_text()` opens
a FIFO and waits for a writer. So a file netprof expects to be regular is lstat'ed first and
not opened at all when it is anything else (opening a device node can have side effects),
then read with profiler/kernel/root_files.py's reader (O_NONBLOCK, O_NOFOLLOW, fstat again, capped).

BCC reads two files of every TRACEPOINT_PROBE itself, outside netprof's control: the
tracepoint's `format` (when compiling, to build the args struct) and its `id` (when
attaching). `tracepoint_files_problem` checks those before a program is handed to BCC, under
every tracefs BCC may pick (it prefers /sys/kernel/debug/tracing when that exists).
"""
from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

from .root_files import read_regular_capped

# /proc/kallsyms is ≈5 MB and BTF ≈5.5 MB on 6.18; a format file a few KB.
DEFAULT_MAX_BYTES = 64 << 20
KALLSYMS_MAX_BYTES = 256 << 20
# Where BCC looks for tracefs, in its order (bcc/__init__.py and libbpf.c), relative to root.
BCC_TRACEFS_DIRS = ("sys/kernel/debug/tracing", "sys/kernel/tracing")

# TRACEPOINT_PROBE(category, event); RAW_TRACEPOINT_PROBE attaches by name and reads no file.
_TRACEPOINT_PROBE = re.compile(r"(?<![A-Za-z0-9_])TRACEPOINT_PROBE\(\s*(\w+)\s*,\s*(\w+)\s*\)")

_KINDS = ((stat.S_ISFIFO, "FIFO"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
          (stat.S_ISSOCK, "socket"), (stat.S_ISLNK, "symlink"), (stat.S_ISDIR, "directory"))


class NotRegularFile(OSError):
    """A path where a regular file was expected holds something else (a FIFO, a device…)."""

    def __init__(self, path: str | os.PathLike[str], mode: int):
        kind = next((name for test, name in _KINDS if test(mode)), "special file")
        super().__init__(errno.EINVAL, f"is a {kind}, not a regular file", str(path))

    def __str__(self) -> str:
        return f"{self.filename} {self.strerror}"


def regular_file_problem(path: str | os.PathLike[str]) -> str | None:
    """Why `path` is there but not a regular file, or None (also when it is missing: whoever
    reads it reports that)."""
    try:
        mode = os.lstat(path).st_mode
    except (OSError, ValueError):
        return None
    return None if stat.S_ISREG(mode) else str(NotRegularFile(path, mode))


def read_kernel_bytes(path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The bytes of a regular file, like Path.read_bytes() but never opening anything else.
    Raises OSError: FileNotFoundError and friends from lstat, NotRegularFile, or EIO when
    it changed, was unreadable or is over `max_bytes`."""
    mode = os.lstat(path).st_mode
    if not stat.S_ISREG(mode):
        raise NotRegularFile(path, mode)
    data = read_regular_capped(Path(path), max_bytes)
    if data is None:
        raise OSError(errno.EIO, f"unreadable, replaced while read, or over {max_bytes} bytes", str(path))
    return data


def read_kernel_text(path: str | os.PathLike[str], max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """`read_kernel_bytes` decoded (kernel text is ASCII; anything else is replaced)."""
    return read_kernel_bytes(path, max_bytes).decode("utf-8", errors="replace")


def tracepoints_in_source(source_text: str) -> list[str]:
    """"category/event" of every TRACEPOINT_PROBE in a BPF C source, in order."""
    return list(dict.fromkeys(f"{c}/{e}" for c, e in _TRACEPOINT_PROBE.findall(source_text)))


def bcc_tracefs_dirs(root: Path = Path("/"), also: str | None = None) -> list[Path]:
    """Every tracefs BCC may read from here (those with an events/ folder), plus `also`
    (the one netprof found, e.g. NETPROF_TRACEFS)."""
    candidates = [root / rel for rel in BCC_TRACEFS_DIRS] + ([Path(also)] if also else [])
    found = []
    for candidate in candidates:
        try:
            if (candidate / "events").is_dir() and candidate not in found:
                found.append(candidate)
        except OSError:
            continue
    return found


def tracepoint_files_problem(events: Iterable[str], tracefs_dirs: Iterable[Path]) -> str | None:
    """The first `format` or `id` file of these tracepoints that is not a regular file, as a
    sentence; None when BCC can read them all without hanging."""
    for tracefs in tracefs_dirs:
        for event in events:
            for name in ("format", "id"):
                problem = regular_file_problem(tracefs / "events" / event / name)
                if problem:
                    return f"tracepoint {event.replace('/', ':')}: {problem}"
    return None
