"""What the running kernel offers netprof: BTF, tracefs, kprobes, headers, privileges.

Pure functions over a filesystem root so the same code runs against recorded fixture trees.
"""
from __future__ import annotations

import os
import platform
from dataclasses import dataclass
from pathlib import Path

from ..errors import NetprofError
from .kernel_files import read_kernel_text

TRACEFS_CANDIDATES = ("sys/kernel/tracing", "sys/kernel/debug/tracing")


@dataclass(frozen=True)
class KernelInfo:
    release: str
    btf: bool
    kprobes: bool
    tracefs: str | None
    headers: str | None  # a real kernel include tree, if one is installed

    def to_json(self) -> dict:
        return {"release": self.release, "btf": self.btf, "kprobes": self.kprobes}


def find_tracefs(root: Path = Path("/")) -> Path | None:
    override = os.environ.get("NETPROF_TRACEFS")
    candidates = [Path(override)] if override else [root / c for c in TRACEFS_CANDIDATES]
    for path in candidates:
        try:
            if (path / "events").is_dir():
                return path
        except OSError:  # not root: tracefs is 0700; the root check reports that first
            continue
    return None


def has_kprobe_pmu(root: Path = Path("/")) -> bool:
    """Whether the kernel has the kprobe PMU: BCC then creates each kprobe with
    perf_event_open, and the kprobe dies with its fd (no kprobe_events entry to remove)."""
    return (root / "sys/bus/event_source/devices/kprobe/type").exists()


def has_kprobes(tracefs: Path | None, root: Path = Path("/")) -> bool:
    # CONFIG_KPROBES exposes kprobe_events in tracefs and the kprobe PMU in sysfs.
    if tracefs is not None and (tracefs / "kprobe_events").exists():
        return True
    return has_kprobe_pmu(root)


def find_kernel_headers(release: str, root: Path = Path("/")) -> Path | None:
    """The kernel's build tree: where `include/generated/autoconf.h` (the kernel's CONFIG_*)
    lives, with `include/linux/kconfig.h` in it or in its `source` sibling.

    Debian and Ubuntu split the headers: /lib/modules/<rel>/build is the arch-specific tree
    (generated/autoconf.h, arch/x86/include/generated) and /lib/modules/<rel>/source the
    -common one (include/linux/*.h). Compiling against `source` alone misses autoconf.h, so
    every CONFIG_* reads as unset and most programs fail; BCC knows the split when given the
    `build` tree (the loader then leaves BCC_KERNEL_SOURCE unset). A tree with kconfig.h but
    no autoconf.h anywhere is not configured: not usable.
    """
    modules = root / "lib/modules" / release
    for build, source in ((modules / "build", modules / "source"),
                          (root / "usr/src" / f"linux-headers-{release}", None)):
        if not (build / "include/generated/autoconf.h").is_file():
            continue
        if (build / "include/linux/kconfig.h").is_file() or \
                (source is not None and (source / "include/linux/kconfig.h").is_file()):
            return build
    return None


def is_split_build_tree(headers: Path, release: str, root: Path = Path("/")) -> bool:
    """The distribution's split layout: `build` without include/linux, `source` beside it."""
    modules = root / "lib/modules" / release
    return headers == modules / "build" and not (headers / "include/linux/kconfig.h").is_file()


def probe_kernel(root: Path = Path("/"), release: str | None = None) -> KernelInfo:
    release = release or platform.release()
    tracefs = find_tracefs(root)
    headers = find_kernel_headers(release, root)
    return KernelInfo(
        release=release,
        btf=(root / "sys/kernel/btf/vmlinux").is_file(),
        kprobes=has_kprobes(tracefs, root),
        tracefs=str(tracefs) if tracefs else None,
        headers=str(headers) if headers else None,
    )


CAP_SYS_ADMIN = 21
CAP_PERFMON = 38
CAP_BPF = 39


def effective_capabilities(status_text: str | None = None) -> int:
    """The CapEff mask of this process (from /proc/self/status)."""
    text = status_text if status_text is not None else read_kernel_text("/proc/self/status")
    for line in text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return 0


def missing_bpf_capabilities(caps: int | None = None) -> str | None:
    """What stops this process from loading tracing BPF programs, or None.

    Since 5.8 CAP_BPF + CAP_PERFMON suffice for tracing programs; CAP_SYS_ADMIN covers both.
    """
    caps = effective_capabilities() if caps is None else caps
    if caps & (1 << CAP_SYS_ADMIN):
        return None
    missing = [name for bit, name in ((CAP_BPF, "CAP_BPF"), (CAP_PERFMON, "CAP_PERFMON"))
               if not caps & (1 << bit)]
    return "+".join(missing) if missing else None


def require_capture_ready(info: KernelInfo) -> None:
    """Refuse, with one line saying what is missing, before anything is compiled."""
    if os.geteuid() != 0:
        raise NetprofError("netprof needs root to load BPF programs (run it with sudo, or as root)")
    missing = missing_bpf_capabilities()
    if missing:
        raise NetprofError(
            f"BPF is not permitted: this process lacks {missing} (or CAP_SYS_ADMIN); "
            "in a container, grant CAP_BPF and CAP_PERFMON"
        )
    if info.tracefs is None:
        where = os.environ.get("NETPROF_TRACEFS") or "/sys/kernel/tracing"
        raise NetprofError(
            f"tracefs is not mounted (looked for {where}/events): "
            "mount -t tracefs tracefs /sys/kernel/tracing"
        )
    if not info.btf and info.headers is None:
        raise NetprofError(
            "this kernel has neither BTF (/sys/kernel/btf/vmlinux, CONFIG_DEBUG_INFO_BTF) nor "
            f"headers (/lib/modules/{info.release}/build): netprof needs one of them"
        )


def tracepoint_fields(tracefs: str | None, event: str) -> set[str]:
    """Field names of a tracepoint, from its tracefs format file (empty if unreadable)."""
    if not tracefs:
        return set()
    try:
        text = read_kernel_text(Path(tracefs) / "events" / event / "format")
    except OSError:  # missing, unreadable, or not a regular file (a FIFO must not hang us)
        return set()
    fields = set()
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("field:"):
            declaration = line.split(";", 1)[0]
            fields.add(declaration.split()[-1].split("[")[0])
    return fields
