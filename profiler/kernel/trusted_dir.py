"""Directories root may build from: nobody but root (or the running user) can change them.

netprof writes its kernel-header shim into a cache directory and then hands it to the
compiler as root. The cache's location comes from the environment (NETPROF_CACHE_DIR,
XDG_CACHE_HOME, HOME), and under `sudo -E` that is another user's home: that user could plant
a `linux/kconfig.h` of their own, or swap a directory of the tree after it was written. So a
directory is used only when every path component from / down to it, and everything inside
it, is trusted, the way sshd's StrictModes judges a user's ~/.ssh:

- no component is a symlink (a link's target is chosen by whoever can write its folder);
- every component is owned by root or by the running user;
- no component is group- or world-writable, except an ancestor *above* the cache with the
  sticky bit (/tmp): there others cannot rename or remove what root owns, and whatever they
  create in it fails the ownership check on the next component.

When the wanted directory fails, callers build in a private one instead (`private_dir`).
"""
from __future__ import annotations

import errno
import os
import stat
import tempfile
from pathlib import Path

# Where root builds when the cache the environment names is not trusted: persistent first
# (so later runs reuse it), then the per-boot tmpfs.
PRIVATE_DIRS = (Path("/var/cache/netprof"), Path("/run/netprof"))
# Temp folders for a last-resort mkdtemp, after $TMPDIR (which `sudo -E` may have set to a
# user's folder: it is checked like everything else).
_TEMP_FALLBACKS = ("/tmp",)


class UntrustedDir(Exception):
    """A directory some other user could change; the message says which component and why."""


def _trusted_owners() -> set[int]:
    return {0, os.geteuid()}


def component_problem(path: Path, info: os.stat_result, allow_sticky: bool) -> str | None:
    """Why one lstat'ed path component cannot be trusted, or None."""
    if stat.S_ISLNK(info.st_mode):
        return f"{path} is a symlink"
    if info.st_uid not in _trusted_owners():
        return f"{path} is owned by uid {info.st_uid}"
    writable_by_others = info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
    if writable_by_others and not (allow_sticky and stat.S_ISDIR(info.st_mode) and info.st_mode & stat.S_ISVTX):
        return f"{path} is {'world' if info.st_mode & stat.S_IWOTH else 'group'}-writable"
    return None


def path_problem(path: Path) -> str | None:
    """Why `path` (or, when it does not exist yet, its deepest existing ancestor) could be
    changed by someone other than root or this user; None when it cannot."""
    absolute = Path(os.path.abspath(path))
    current = Path(absolute.anchor)
    for index, part in enumerate((absolute.anchor, *absolute.parts[1:])):
        if index:
            current = current / part
        try:
            info = os.lstat(current)
        except FileNotFoundError:
            return None  # what is missing will be created by us, 0700, inside a trusted folder
        except OSError as exc:
            return f"cannot inspect {current}: {exc.strerror}"
        is_target = current == absolute
        problem = component_problem(current, info, allow_sticky=not is_target)
        if problem:
            return problem
        if not is_target and not stat.S_ISDIR(info.st_mode):
            return f"{current} is not a directory"
    return None


def tighten_own_dir(path: Path) -> str | None:
    """Drop group/world write from `path` when it is a directory root (or this user) owns,
    without the sticky bit; returns what was done, or None when nothing was.

    Kubernetes creates every emptyDir 0777, and with readOnlyRootFilesystem an emptyDir is
    the only place the DaemonSet can cache in. Tightening a directory we own is safe: from
    now on nobody else can add or rename entries, and whatever they left in it before is
    checked entry by entry by the caller. A sticky directory (/tmp) is shared on purpose and
    is never changed; a directory someone else owns is not ours to change.
    """
    try:
        info = os.lstat(path)
    except OSError:
        return None
    mode = info.st_mode
    if (not stat.S_ISDIR(mode) or info.st_uid not in _trusted_owners() or mode & stat.S_ISVTX
            or not mode & (stat.S_IWGRP | stat.S_IWOTH)):
        return None
    if path_problem(Path(os.path.abspath(path)).parent):
        return None  # an untrusted ancestor: tightening this one would not help
    os.chmod(path, stat.S_IMODE(mode) & ~(stat.S_IWGRP | stat.S_IWOTH), follow_symlinks=False)
    return f"made {path} writable by its owner only (it was {stat.S_IMODE(mode):04o})"


def make_trusted_dir(path: Path) -> Path:
    """`path`, created (0700, one component at a time) where missing, after checking every
    component; raises UntrustedDir with the reason, or OSError when it cannot be created
    (a read-only home)."""
    path = Path(os.path.abspath(path))
    problem = path_problem(path)
    if problem:
        raise UntrustedDir(problem)
    missing = []
    probe = path
    while not os.path.lexists(probe):
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            pass  # created meanwhile by another netprof; checked below like any other
    problem = path_problem(path)
    if problem:
        raise UntrustedDir(problem)
    if not stat.S_ISDIR(os.lstat(path).st_mode):
        raise UntrustedDir(f"{path} is not a directory")
    return path


def private_dir(candidates: tuple[Path, ...] | None = None) -> Path:
    """The first trusted, writable directory among `candidates`, else a fresh mkdtemp (0700)
    in the first trusted temp folder. Raises OSError when there is none at all."""
    candidates = PRIVATE_DIRS if candidates is None else candidates
    for candidate in candidates:
        try:
            directory = make_trusted_dir(candidate)
            _check_writable(directory)
            return directory
        except (UntrustedDir, OSError):
            continue
    for temp_root in dict.fromkeys((tempfile.gettempdir(), *_TEMP_FALLBACKS)):
        if path_problem(Path(temp_root)) is None:
            try:
                return Path(tempfile.mkdtemp(prefix="netprof-", dir=temp_root))
            except OSError:
                continue
    raise OSError(errno.EACCES, "no private directory to build in (tried "
                  f"{', '.join(map(str, candidates))} and the temp folder)")


def _check_writable(directory: Path) -> None:
    fd, name = tempfile.mkstemp(prefix=".probe-", dir=directory)
    os.close(fd)
    os.unlink(name)
