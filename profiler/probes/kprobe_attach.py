"""The one decision every kprobe program makes before compiling: can this kernel take it?

A kprobe needs CONFIG_KPROBES (tracefs kprobe_events) and the function to exist as a symbol
(not inlined away, its module loaded). Checked first, so the probe table says exactly why
not, and nothing is compiled for a kernel that cannot attach it.
"""
from __future__ import annotations

from pathlib import Path

from ..kernel.features import KernelInfo
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
