"""Compile and load netprof's BPF programs with BCC, with or without kernel headers."""
from __future__ import annotations

import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path

from ..errors import NetprofError
from .btf import Btf, BtfError
from .features import KernelInfo, is_split_build_tree
from .kernel_files import bcc_tracefs_dirs, tracepoint_files_problem, tracepoints_in_source
from .offsets import OFFSET_MACROS_FROM_HEADERS, KernelLayout, read_layout, read_layout_from_tracefs
from .shim import ensure_shim

BCC_MISSING = (
    "BCC's Python module is not importable: install the OS packages python3-bpfcc and libbpfcc "
    "(Debian/Ubuntu; the PyPI package named 'bcc' is unrelated) and run netprof from a venv "
    "made with --system-site-packages (./bootstrap.sh does both)"
)


def import_bcc():
    try:
        import bcc
    except ImportError:
        raise NetprofError(BCC_MISSING) from None
    return bcc


def bpf_source_dir() -> Path:
    return Path(str(resources.files("netprof_bpf")))


class BpfLoader:
    """Knows how to build any program in bpf/ for this kernel.

    With BTF (the normal case) BCC compiles against netprof's generated header shim and
    every kernel offset arrives as a -D macro read from BTF. Without BTF, real kernel
    headers are used and the same macros are defined as offsetof() expressions.
    """

    def __init__(self, info: KernelInfo, cache_dir: Path | None = None,
                 log: Callable[[str], None] | None = None, tracefs_root: Path = Path("/")):
        self.info = info
        self.tracefs_root = tracefs_root  # where BCC's own tracefs paths are looked up (tests: a fixture)
        self._kernel_source: str | None
        if info.btf:
            try:
                self.layout: KernelLayout = read_layout(Btf.from_file())
            except BtfError as exc:
                raise NetprofError(f"cannot use this kernel's BTF: {exc}") from None
            self._kernel_source = str(ensure_shim(cache_dir, info.release, **({"log": log} if log else {})))
            # NETPROF_HEADER_SHIM: programs declare the few kernel types the shim lacks.
            self._base_cflags = [*self.layout.cflags(), "-DNETPROF_HEADER_SHIM=1"]
        elif info.headers:
            self.layout = read_layout_from_tracefs(info.tracefs or "/sys/kernel/tracing")
            # A split tree (Debian's build/ + source/) is BCC's own default for the running
            # kernel: it adds both trees' include paths. BCC_KERNEL_SOURCE would make it
            # read one tree only, and miss either autoconf.h or include/linux.
            split = is_split_build_tree(Path(info.headers), info.release)
            self._kernel_source = None if split else info.headers
            self._base_cflags = [
                "-include", "net/sock.h", "-include", "net/net_namespace.h", "-include", "net/tcp.h",
                *(f"-D{name}={expr}" for name, expr in OFFSET_MACROS_FROM_HEADERS.items()),
            ]
        else:
            raise NetprofError("neither BTF nor kernel headers: cannot compile BPF programs")

    @property
    def mode(self) -> str:
        """Which path compiles the programs; where a kernel has both, says the headers were
        there and not used (BTF wins: its offsets are this kernel's by construction)."""
        if self.info.btf:
            return f"btf+shim; headers at {self.info.headers} not used" if self.info.headers else "btf+shim"
        return f"kernel-headers at {self.info.headers}"

    def tracepoints_problem(self, events: list[str]) -> str | None:
        """Why BCC must not open these tracepoints' files ("category/event"), or None: checked
        before every load and before a parked program's tracepoints are attached again."""
        return tracepoint_files_problem(events, bcc_tracefs_dirs(self.tracefs_root, self.info.tracefs))

    def compile(self, program: str, cflags: list[str] | tuple[str, ...] = ()):
        """Compile and load bpf/<program>.bpf.c; returns the bcc.BPF object."""
        source = bpf_source_dir() / f"{program}.bpf.c"
        if not source.is_file():
            raise NetprofError(f"BPF source {source} is missing (broken install?)")
        # BCC opens each TRACEPOINT_PROBE's format and id files itself, blocking on a FIFO.
        problem = self.tracepoints_problem(tracepoints_in_source(source.read_text()))
        if problem:
            raise NetprofError(f"not loading the {program} BPF program: {problem} (a broken or hostile tracefs)")
        bcc = import_bcc()
        if self._kernel_source is None:
            os.environ.pop("BCC_KERNEL_SOURCE", None)
        else:
            os.environ["BCC_KERNEL_SOURCE"] = self._kernel_source
        flags = [*self._base_cflags, f"-I{source.parent}", *cflags, "-Wno-unused-function"]
        try:
            return bcc.BPF(src_file=str(source).encode(), cflags=flags)
        except Exception as exc:  # BCC raises bare Exception for compile and load failures
            raise NetprofError(_explain_bpf_failure(program, exc)) from None


def _explain_bpf_failure(program: str, exc: Exception) -> str:
    from .features import missing_bpf_capabilities

    text = str(exc)
    # BCC reports a refused map creation as "Failed to compile", so check privileges first.
    missing = missing_bpf_capabilities()
    if missing:
        return (f"the kernel refused to load the {program} BPF program (operation not permitted): "
                f"this process lacks {missing}; run as root with CAP_BPF+CAP_PERFMON or CAP_SYS_ADMIN")
    if "Operation not permitted" in text or "EPERM" in text:
        return (f"the kernel refused to load the {program} BPF program (operation not permitted): "
                "run as root with CAP_BPF/CAP_SYS_ADMIN, and check kernel.unprivileged_bpf_disabled "
                "and lockdown (cat /sys/kernel/security/lockdown)")
    if "Failed to compile" in text:
        return f"BCC could not compile {program}.bpf.c for this kernel (compiler output above)"
    return f"loading the {program} BPF program failed: {text.splitlines()[0] if text else exc!r}"
