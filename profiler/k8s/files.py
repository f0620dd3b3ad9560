"""Reading files other programs wrote, as root, without being led anywhere by them.

The resolvers read container-runtime state (OCI `config.json`, pid files), kubelet's pod
directories and /proc. Some of that text is written by containers' neighbours, some of it by
the pods themselves (a pod can rewrite its own /etc/hosts, which is kubelet's `etc-hosts`
file). So every read here:

- resolves the path inside a root, link by link, with `resolve_in_root` (the same code that
  reads /sys for the IRQ planner): a link pointing above the root is not followed;
- opens the last component with O_NOFOLLOW (a link swapped in after resolving is refused)
  and O_NONBLOCK (a FIFO planted where a file should be cannot hang the profiler);
- reads regular files only, and refuses a file larger than the caller's cap instead of
  reading a prefix of it: a truncated JSON document must not parse into something else,
  and a 10 GB `config.json` costs one fstat, not 10 GB of memory.

Nothing read here is executed, and what the resolvers keep of it is a validated label.
"""
from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path
from typing import Any

from ..netns_names import proc_ns_inode as proc_netns_inode
from ..system.irqs import list_dir_in_root, resolve_in_root

__all__ = ["list_dir_in_root", "resolve_in_root", "read_capped", "read_regular_capped",
           "decode_json", "read_json_capped", "read_pid_file", "proc_netns_inode"]

_CHUNK_BYTES = 1 << 16
_DECIMAL = re.compile(r"^[0-9]{1,10}$")
# The kernel's pid_max is at most 2^22 (PID_MAX_LIMIT on 64-bit).
_PID_MAX = 1 << 22


def read_regular_capped(path: Path, max_bytes: int) -> bytes | None:
    """The bytes of a regular file at an already-resolved path, or None when it is missing,
    not a regular file, unreadable, a symlink, or longer than `max_bytes`."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except (OSError, ValueError):  # ValueError: a NUL byte in the path
        return None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_size > max_bytes:
            return None
        chunks: list[bytes] = []
        total = 0
        # /proc files report size 0: read to EOF, but never past the cap (a file may also
        # grow between fstat and read).
        while True:
            chunk = os.read(fd, min(_CHUNK_BYTES, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > max_bytes:
                return None
        return b"".join(chunks)
    except OSError:
        return None
    finally:
        os.close(fd)


def read_capped(root: Path, path: str | os.PathLike[str], max_bytes: int) -> bytes | None:
    """A file inside `root` (a leading "/" in `path` means root), read with
    `read_regular_capped`; None if it resolves outside root or does not exist."""
    resolved = resolve_in_root(root, path)
    if resolved is None:
        return None
    return read_regular_capped(resolved, max_bytes)


def decode_json(data: bytes) -> Any | None:
    """A JSON document, or None when it is not one.

    Hostile JSON is "unknown", never a crash: invalid UTF-8 and bad syntax raise ValueError,
    a deeply nested document ("[[[[…") raises RecursionError, a 5000-digit number raises
    ValueError (Python's int-digits limit).
    """
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None


def read_json_capped(root: Path, path: str | os.PathLike[str], max_bytes: int) -> Any | None:
    """A JSON document inside root, or None when it is missing, too big or not JSON."""
    data = read_capped(root, path, max_bytes)
    return decode_json(data) if data is not None else None


def read_pid_file(root: Path, path: str | os.PathLike[str]) -> int | None:
    """A pid written as decimal text (containerd's `init.pid`, conmon's `pidfile`)."""
    data = read_capped(root, path, 32)
    if data is None:
        return None
    text = data.decode("ascii", errors="replace").strip()
    if not _DECIMAL.match(text):
        return None
    pid = int(text)
    return pid if 0 < pid <= _PID_MAX else None
