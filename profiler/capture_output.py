"""Where `netprof profile` puts what it captured, so that no capture is lost to an output error.

A capture costs its whole duration and cannot be taken again (the incident is over), so:

- the output folder is checked *before* the probes attach (`check_output_dir`): it is, or can
  be made, a directory; a file can be created and removed in it; its names fit the file
  system. An existing file, /proc/…, a read-only mount or a 300-character name fail at once,
  with one line, having cost nothing;
- stdout is checked too: a closed stdout (`>&-`) fails at once;
- what can only fail at the end (a disk that fills during the capture, a reader that went
  away from the pipe, /dev/full) does not lose the capture: it is saved as capture JSON into
  a private file (`save_fallback`: 0600, in root's /var/lib/netprof/captures, else a mkstemp
  in the temp folder) and the one-line error says where.
"""
from __future__ import annotations

import errno
import io
import json
import os
import sys
import tempfile
from pathlib import Path

from .errors import NetprofError
from .kernel.trusted_dir import UntrustedDir, make_trusted_dir

# Root's captures that could not go where they were asked to (0700, see trusted_dir.py).
FALLBACK_DIRS = (Path("/var/lib/netprof/captures"),)
# The longest file `profile --output` writes, with atomic_write_text's temporary-name prefix
# and mkstemp's 8 random characters.
_LONGEST_OUTPUT_NAME = ".speedscope.json.XXXXXXXX"
_DEFAULT_NAME_MAX = 255
_DEFAULT_PATH_MAX = 4096


def _nearest_existing(path: Path) -> Path:
    probe = path
    while not os.path.lexists(probe) and probe != probe.parent:
        probe = probe.parent
    return probe


def _limit(path: Path, name: str, default: int) -> int:
    try:
        return os.pathconf(path, name)
    except (OSError, ValueError):
        return default


def check_output_dir(out_dir: Path) -> None:
    """Raise NetprofError (one line) unless files can be written into `out_dir` (created if
    missing). Nothing is left behind: the probe file or folder is removed again."""
    absolute = Path(os.path.abspath(out_dir))
    existing = _nearest_existing(absolute)
    name_max = _limit(existing, "PC_NAME_MAX", _DEFAULT_NAME_MAX)
    for part in absolute.parts[1:]:
        if len(os.fsencode(part)) > name_max:
            raise NetprofError(f"--output: the name {part[:40]}… is longer than this file system's "
                               f"{name_max} bytes")
    path_max = _limit(existing, "PC_PATH_MAX", _DEFAULT_PATH_MAX)
    if len(os.fsencode(str(absolute / _LONGEST_OUTPUT_NAME))) >= path_max:
        raise NetprofError(f"--output: the path is longer than this system's {path_max} bytes")
    if existing == absolute and not absolute.is_dir():
        raise NetprofError(f"--output {out_dir} exists and is not a directory (it takes a folder "
                           "for capture.json and the exports)")
    if not existing.is_dir():
        raise NetprofError(f"--output {out_dir}: {existing} is not a directory")
    try:
        if existing == absolute:
            fd, probe = tempfile.mkstemp(prefix=".netprof-probe-", dir=absolute)
            os.close(fd)
            os.unlink(probe)
        else:
            os.rmdir(tempfile.mkdtemp(prefix=".netprof-probe-", dir=existing))
    except OSError as exc:
        raise NetprofError(f"--output {out_dir}: cannot write into {existing}: "
                           f"{exc.strerror or exc}; nothing was captured") from None


def check_stdout() -> None:
    """A closed stdout (`netprof profile >&-`) is refused before the capture."""
    try:
        if sys.stdout is None:  # Python's stdout when fd 1 was not open at start
            raise OSError(errno.EBADF, "not open")
        os.fstat(sys.stdout.fileno())
    except io.UnsupportedOperation:
        return  # an in-memory stream (an embedding program, a test): nothing to check
    except (OSError, ValueError) as exc:  # ValueError: a closed file object
        raise NetprofError(f"stdout is closed ({getattr(exc, 'strerror', None) or exc}): "
                           "give --output DIR, or redirect stdout to a file") from None


def save_fallback(document: dict, fallback_dirs: tuple[Path, ...] | None = None) -> Path:
    """Save the capture as a private 0600 JSON file; the first place that works wins.
    Raises OSError (the last failure) when none does."""
    text = json.dumps(document, indent=2) + "\n"
    last_error: OSError = OSError(errno.ENOENT, "no place to save it")
    places: list[Path] = []
    for directory in FALLBACK_DIRS if fallback_dirs is None else fallback_dirs:
        try:
            places.append(make_trusted_dir(directory))
        except (UntrustedDir, OSError) as exc:
            last_error = exc if isinstance(exc, OSError) else OSError(errno.EPERM, str(exc))
    places.append(Path(tempfile.gettempdir()))
    for directory in places:
        try:
            fd, name = tempfile.mkstemp(prefix="netprof-capture-", suffix=".json", dir=directory)
        except OSError as exc:
            last_error = exc
            continue
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
            return Path(name)
        except OSError as exc:
            last_error = exc
            Path(name).unlink(missing_ok=True)
    raise last_error


def silence_stdout() -> None:
    """After stdout failed (EPIPE, ENOSPC): point fd 1 at /dev/null and drop what Python still
    buffers, so the interpreter's final flush cannot print a second error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass
    if sys.stdout is not None:
        try:
            sys.stdout = open(os.devnull, "w")
        except OSError:
            pass
