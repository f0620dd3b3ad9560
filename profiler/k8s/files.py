"""Reading files other programs wrote, as root, without being led anywhere by them.

The resolvers read container-runtime state (OCI `config.json`, pid files), kubelet's pod
directories and /proc. Some of that text is written by containers' neighbours, some of it by
the pods themselves (a pod can rewrite its own /etc/hosts, which is kubelet's `etc-hosts`
file). So every read here:

- resolves the path inside a root, link by link, with `resolve_in_root`
  (`profiler.kernel.root_files`, the same code that reads /sys and /proc): a link pointing
  above the root is not followed;
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
from pathlib import Path
from typing import Any

from ..netns_names import proc_ns_inode as proc_netns_inode
from ..kernel.root_files import list_dir_in_root, read_capped, read_regular_capped, resolve_in_root

__all__ = ["list_dir_in_root", "resolve_in_root", "read_capped", "read_regular_capped",
           "decode_json", "read_json_capped", "read_pid_file", "proc_netns_inode"]

_DECIMAL = re.compile(r"^[0-9]{1,10}$")
# The kernel's pid_max is at most 2^22 (PID_MAX_LIMIT on 64-bit).
_PID_MAX = 1 << 22


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
