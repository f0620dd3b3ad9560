"""What every kprobe program asks of the kernel: before compiling, can this kernel take it;
at detach, letting go of it even where BCC cannot.

A kprobe needs CONFIG_KPROBES (tracefs kprobe_events) and the function to exist as a symbol
(not inlined away, its module loaded). Checked first, so the probe table says exactly why
not, and nothing is compiled for a kernel that cannot attach it.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..inert import inert
from ..kernel.features import KernelInfo, has_kprobe_pmu
from ..kernel.kernel_files import KALLSYMS_MAX_BYTES, read_kernel_text


def kernel_has_symbol(symbol: str, root: Path = Path("/")) -> bool:
    """Whether /proc/kallsyms lists the function (as itself: a compiler clone such as
    `name.isra.0` is another symbol, not a place to attach a kprobe for `name`)."""
    try:
        # Regular files only, capped: a planted FIFO or a huge file cannot hang or swamp us.
        text = read_kernel_text(root / "proc/kallsyms", KALLSYMS_MAX_BYTES)
    except OSError:
        return False
    return any(line.split(maxsplit=3)[2:3] == [symbol] for line in text.splitlines())


def why_not_kprobe(info: KernelInfo, symbol: str, root: Path = Path("/"),
                   module_hint: str = "") -> str | None:
    """None when a kprobe on `symbol` can attach here; otherwise the reason, in one line."""
    if not info.kprobes:
        return "kprobes not available on this kernel (CONFIG_KPROBES off)"
    if not kernel_has_symbol(symbol, root):
        return f"{symbol} not in /proc/kallsyms{module_hint}"
    return None


def release_kprobes(bpf: Any, root: Path = Path("/")) -> list[str]:
    """Detach every kprobe of a BCC object, before its cleanup(); returns the events that may
    be left in kprobe_events.

    BCC closes a kprobe's perf fd, then opens tracefs' kprobe_events to remove the event in
    case it was made there, and raises when it cannot open it (a tracefs that is missing,
    unreadable or hostile), although a kprobe made through the PMU is already gone with its
    fd. Raised from cleanup() that would end a capture as an internal error, and BCC's atexit
    cleanup would raise again for every kprobe left in its table."""
    left: list[str] = []
    pmu: bool | None = None  # read once, and only if a detach fails
    for ev_name, by_function in list(bpf.kprobe_fds.items()):
        for function in list(by_function):
            try:
                bpf.detach_kprobe_event_by_fn(ev_name, function)
            except Exception:  # BCC raises bare Exception
                if pmu is None:
                    pmu = has_kprobe_pmu(root)
                if not pmu:
                    left.append(ev_name.decode(errors="replace") if isinstance(ev_name, bytes) else str(ev_name))
        bpf.kprobe_fds.pop(ev_name, None)
    return left


def release_and_report(bpf: Any, probe: str) -> None:
    """release_kprobes(), saying in one line on stderr which kprobe events may be left."""
    for event in release_kprobes(bpf):
        print(f"netprof: {probe}: could not remove kprobe event {inert(event)} from kprobe_events "
              "(tracefs would not open)", file=sys.stderr)
