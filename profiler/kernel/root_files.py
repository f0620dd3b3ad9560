"""Reading files inside a root (default `/`) without being led out of it, as root.

Every reader of /proc, /sys and the node's other files takes a root, so unit tests run on
recorded trees of other machines and the live code is the same code. Some of those trees are
hostile (a container's neighbours, a pod rewriting its own files), so:

- `resolve_in_root` follows symlinks by reading them (os.readlink) and doing the path
  arithmetic here, never by the OS: a link pointing above the root is not followed;
- the last component is opened with O_NOFOLLOW (a link swapped in after resolving is refused)
  and O_NONBLOCK (a FIFO planted where a file should be cannot hang the profiler);
- only regular files are read, and `read_regular_capped` refuses a file larger than the
  caller's cap instead of reading a prefix of it.
"""
from __future__ import annotations

import os
import stat
from collections import deque
from pathlib import Path

# The kernel gives up after 40 links in one lookup (ELOOP); so do we.
MAX_SYMLINK_HOPS = 40
# /proc/interrupts on a 256-CPU box with a few thousand vectors is a few MB; the cap only stops
# a planted giant file from being read whole.
MAX_FILE_BYTES = 64 * 1024 * 1024
_CHUNK_BYTES = 1 << 16


def root_path(root: Path) -> Path:
    return Path(os.path.abspath(root))


def resolve_in_root(root: Path, path: str | os.PathLike[str]) -> Path | None:
    """Where `path` (relative to root; a leading "/" means root) really is, inside root.

    Every symlink on the way is read and applied here: relative targets from the link's
    directory, absolute targets from root. Returns None when the path does not exist, loops,
    or would step above root at any point -- it is then not part of the tree we were given.
    """
    root = root_path(root)
    pending = deque(part for part in str(path).split("/"))
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.popleft()
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                return None
            resolved.pop()
            continue
        candidate = os.path.join(root, *resolved, part)
        try:
            mode = os.lstat(candidate).st_mode
        except (OSError, ValueError):  # ValueError: a NUL byte in the path
            return None
        if stat.S_ISLNK(mode):
            hops += 1
            if hops > MAX_SYMLINK_HOPS:
                return None
            try:
                target = os.readlink(candidate)
            except OSError:
                return None
            if target.startswith("/"):
                resolved = []
            pending.extendleft(reversed(target.split("/")))
            continue
        resolved.append(part)
    return root.joinpath(*resolved)


def relative_in_root(root: Path, resolved: Path) -> str:
    return str(resolved.relative_to(root_path(root)))


def read_text_in_root(root: Path, path: str | os.PathLike[str]) -> str | None:
    """Contents of a file inside root, or None if it is missing, unreadable or outside root."""
    resolved = resolve_in_root(root, path)
    if resolved is None:
        return None
    return read_regular_text(resolved)


def read_regular_text(path: Path) -> str | None:
    # O_NOFOLLOW: the path was resolved link by link above; if the last component was swapped
    # for a link since, refuse rather than follow it. O_NONBLOCK: a FIFO planted in a tree
    # must not hang the reader.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks: list[bytes] = []
        total = 0
        # /proc and /sys files report size 0 (or 4096): read until EOF, not by st_size.
        while total < MAX_FILE_BYTES:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        return b"".join(chunks).decode("utf-8", errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def list_dir_in_root(root: Path, path: str | os.PathLike[str]) -> list[str]:
    """Names in a directory inside root; [] when it is missing, unreadable or outside root."""
    resolved = resolve_in_root(root, path)
    if resolved is None:
        return []
    try:
        return sorted(os.listdir(resolved))
    except OSError:
        return []


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
