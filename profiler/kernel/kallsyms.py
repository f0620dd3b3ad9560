"""Kernel text addresses → function names, from /proc/kallsyms.

The skb:kfree_skb tracepoint reports where a packet was dropped as a return address inside
the dropping function; an operator wants `udp_queue_rcv_one_skb+0x1a4`, not a hex number.
/proc/kallsyms is parsed once (≈120k lines, ~0.1 s) into sorted arrays and searched with
bisect; parsing is a pure function of the file's text so tests run on fixtures.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass
from pathlib import Path

from .kernel_files import KALLSYMS_MAX_BYTES, read_kernel_text

# Text symbols: code addresses can only fall inside these (weak ones included).
_TEXT_TYPES = frozenset("tTwW")
# Past this distance from the nearest symbol below, an address is not believed to be inside
# that function (kallsyms lists no sizes; the largest kernel functions are tens of KiB).
MAX_FUNCTION_OFFSET = 1 << 20


@dataclass(frozen=True)
class KernelSymbol:
    name: str
    address: int
    module: str | None  # None for the kernel image itself


class Kallsyms:
    """Sorted text symbols; `symbolize(address)` → "function+0xoffset" (or "[module]…")."""

    def __init__(self, symbols: list[KernelSymbol]):
        ordered = sorted(symbols, key=lambda s: s.address)
        self._addresses = [s.address for s in ordered]
        self._symbols = ordered

    @classmethod
    def parse(cls, text: str) -> "Kallsyms":
        symbols = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) < 3 or parts[1] not in _TEXT_TYPES:
                continue
            try:
                address = int(parts[0], 16)
            except ValueError:
                continue
            if address == 0:
                # kptr_restrict hides every address as 0: nothing can be symbolized.
                continue
            module = parts[3].strip("[]") if len(parts) > 3 else None
            symbols.append(KernelSymbol(parts[2], address, module))
        return cls(symbols)

    @classmethod
    def load(cls, root: Path = Path("/")) -> "Kallsyms":
        """Parse <root>/proc/kallsyms; an unreadable file gives an empty table (hex output)."""
        try:
            text = read_kernel_text(root / "proc/kallsyms", KALLSYMS_MAX_BYTES)
        except OSError:
            text = ""
        return cls.parse(text)

    def __len__(self) -> int:
        return len(self._symbols)

    def lookup(self, address: int) -> tuple[KernelSymbol, int] | None:
        """The symbol containing `address` and the offset into it, or None."""
        index = bisect.bisect_right(self._addresses, address) - 1
        if index < 0:
            return None
        symbol = self._symbols[index]
        offset = address - symbol.address
        if offset >= MAX_FUNCTION_OFFSET:
            return None
        return symbol, offset

    def symbolize(self, address: int) -> str:
        found = self.lookup(address)
        if found is None:
            return f"0x{address:x}"
        symbol, offset = found
        prefix = f"[{symbol.module}]" if symbol.module else ""
        return f"{prefix}{symbol.name}+0x{offset:x}"
