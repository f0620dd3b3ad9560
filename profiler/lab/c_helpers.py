"""The lab's small C helpers (ct_race.c, udp_burst.c): compiled once per source version into
netprof's cache, for timing Python cannot give (two CPUs racing, dense bursts)."""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from profiler.lab.scenarios import ScenarioUnavailable


def ensure_c_helper(source_path: Path, cache_dir: Path | None = None, flags: tuple[str, ...] = ()) -> Path:
    """Compile `source_path` (once per source version) into the cache dir; return the binary."""
    from profiler.kernel.shim import default_cache_dir
    from profiler.kernel.trusted_dir import UntrustedDir, component_problem, make_trusted_dir, private_dir

    source = source_path.read_bytes()
    digest = hashlib.sha256(source + " ".join(flags).encode()).hexdigest()[:12]
    # Root runs this binary: never one from a cache another user can write (sudo -E's HOME).
    try:
        directory = make_trusted_dir((cache_dir or default_cache_dir()) / "lab")
    except (UntrustedDir, OSError):
        directory = make_trusted_dir(private_dir() / "lab")
    binary = directory / f"{source_path.stem}-{digest}"
    if binary.is_file() and os.access(binary, os.X_OK) and \
            component_problem(binary, os.lstat(binary), allow_sticky=False) is None:
        return binary
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise ScenarioUnavailable(f"no C compiler (gcc): the lab helper {source_path.name} is "
                                  "compiled at setup (apt install gcc)")
    directory.mkdir(parents=True, exist_ok=True)
    # Compiled under a temporary name and renamed: two scenarios starting together never
    # run a half-written binary.
    fd, staging = tempfile.mkstemp(prefix=f".{source_path.stem}-", dir=directory)
    os.close(fd)
    try:
        proc = subprocess.run([compiler, "-O2", "-Wall", *flags, "-o", staging, str(source_path)],
                              capture_output=True, text=True, timeout=60)
        if proc.returncode != 0:
            detail = " | ".join(proc.stderr.strip().splitlines()[:5])
            raise ScenarioUnavailable(f"compiling {source_path.name} failed: {detail}")
        os.chmod(staging, 0o755)
        os.replace(staging, binary)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)
    return binary
