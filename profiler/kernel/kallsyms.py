"""Kernel text addresses → function names, from /proc/kallsyms.

The skb:kfree_skb tracepoint reports where a packet was dropped as a return address inside
the dropping function; an operator wants `udp_queue_rcv_one_skb+0x1a4`, not a hex number.

/proc/kallsyms has ≈120k lines (5 MiB). It is parsed once, with numpy over the file's bytes,
into sorted address and offset arrays; names are decoded only for the addresses looked up.
A list of Python objects per symbol cost ≈0.3 s of CPU inside a sampling interval (the first
stack of a capture) and ≈30 MiB of heap for the process's lifetime; this costs a few tens
of ms and the file's bytes plus ≈2 MiB of arrays. Parsing is a pure function of the file's
contents so tests run on fixtures.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .kernel_files import KALLSYMS_MAX_BYTES, read_kernel_bytes

# Text symbols: code addresses can only fall inside these (weak ones included).
_TEXT_TYPES = np.frombuffer(b"tTwW", dtype=np.uint8)
# Past this distance from the nearest symbol below, an address is not believed to be inside
# that function (kallsyms lists no sizes; the largest kernel functions are tens of KiB).
MAX_FUNCTION_OFFSET = 1 << 20

_HEX_DIGITS = 16  # a 64-bit address
_NOT_HEX = 255
_HEX_VALUE = np.full(256, _NOT_HEX, dtype=np.uint8)
for _value, _char in enumerate(b"0123456789abcdef"):
    _HEX_VALUE[_char] = _value
    _HEX_VALUE[bytes([_char]).upper()[0]] = _value
_NEWLINE, _SPACE, _TAB = 0x0A, 0x20, 0x09


@dataclass(frozen=True)
class KernelSymbol:
    name: str
    address: int
    module: str | None  # None for the kernel image itself


def _first_at_or_after(positions: np.ndarray, starts: np.ndarray, missing: int) -> np.ndarray:
    """For each start, the first of the sorted `positions` ≥ it (`missing` where none)."""
    if not len(positions):
        return np.full(len(starts), missing, dtype=np.int64)
    index = np.searchsorted(positions, starts)
    return np.where(index < len(positions), positions[np.minimum(index, len(positions) - 1)], missing)


class Kallsyms:
    """Sorted text symbols; `symbolize(address)` → "function+0xoffset" (or "[module]…")."""

    def __init__(self, data: bytes = b"", addresses: np.ndarray | None = None, name_starts: np.ndarray | None = None,
                 name_ends: np.ndarray | None = None, module_starts: np.ndarray | None = None,
                 module_ends: np.ndarray | None = None):
        """Built by `parse`: the file's bytes and, per text symbol in address order, its address
        and the byte ranges of its name and module (an empty module range: the kernel image)."""
        empty = np.zeros(0, dtype=np.int64)
        self._data = data
        self._addresses = addresses if addresses is not None else np.zeros(0, dtype=np.uint64)
        self._name_starts = name_starts if name_starts is not None else empty
        self._name_ends = name_ends if name_ends is not None else empty
        self._module_starts = module_starts if module_starts is not None else empty
        self._module_ends = module_ends if module_ends is not None else empty

    @classmethod
    def parse(cls, text: str | bytes) -> "Kallsyms":
        """Lines "<hex address> <type> <name>[\\t[<module>]]"; anything else is skipped, as are
        non-text symbols and address 0 (kptr_restrict hides every address as 0: nothing can
        be symbolized from that)."""
        data = text.encode("utf-8", errors="replace") if isinstance(text, str) else bytes(text)
        if not data.endswith(b"\n"):
            data += b"\n"
        raw = np.frombuffer(data, dtype=np.uint8)
        size = len(raw)
        ends = np.flatnonzero(raw == _NEWLINE)
        starts = np.concatenate(([0], ends[:-1] + 1)).astype(np.int64)
        spaces = np.flatnonzero(raw == _SPACE)
        first_space = _first_at_or_after(spaces, starts, size)
        width = first_space - starts
        type_at, name_starts = first_space + 1, first_space + 3
        valid = (width >= 1) & (width <= _HEX_DIGITS) & (name_starts < ends)
        # Positions past the file are clamped; they occur only where `valid` is already False.
        valid &= (np.isin(raw[np.minimum(type_at, size - 1)], _TEXT_TYPES)
                  & (raw[np.minimum(first_space + 2, size - 1)] == _SPACE))

        starts, ends, first_space, name_starts = starts[valid], ends[valid], first_space[valid], name_starts[valid]
        # The address: its hex digits right-aligned into 16 columns, the missing ones 0; one
        # column at a time, so the temporaries are one array per line, not sixteen.
        addresses = np.zeros(len(starts), dtype=np.uint64)
        well_formed = np.ones(len(starts), dtype=bool)
        for column in range(_HEX_DIGITS):
            at = first_space - _HEX_DIGITS + column
            inside = at >= starts
            digit = _HEX_VALUE[raw[np.maximum(at, 0)]]
            well_formed &= ~(inside & (digit == _NOT_HEX))
            addresses = (addresses << np.uint64(4)) | np.where(inside & (digit != _NOT_HEX), digit, 0).astype(np.uint64)

        tabs = np.flatnonzero(raw == _TAB)
        tab = _first_at_or_after(tabs, name_starts, size)
        has_module = tab < ends
        name_ends = np.where(has_module, tab, ends)
        module_starts = np.where(has_module, tab + 1, 0)
        module_ends = np.where(has_module, ends, 0)
        keep = well_formed & (addresses != 0) & (name_ends > name_starts)
        # "[module]" → "module"
        bracketed = keep & has_module & (module_ends - module_starts >= 2)
        opens = raw[np.minimum(module_starts, size - 1)] == ord("[")
        closes = raw[np.maximum(module_ends - 1, 0)] == ord("]")
        module_starts = np.where(bracketed & opens, module_starts + 1, module_starts)
        module_ends = np.where(bracketed & closes, module_ends - 1, module_ends)

        order = np.argsort(addresses[keep], kind="stable")
        pick = lambda array: array[keep][order]  # noqa: E731 - one selection for five arrays
        return cls(data, pick(addresses), pick(name_starts), pick(name_ends), pick(module_starts), pick(module_ends))

    @classmethod
    def load(cls, root: Path = Path("/")) -> "Kallsyms":
        """Parse <root>/proc/kallsyms; an unreadable file gives an empty table (hex output)."""
        try:
            data = read_kernel_bytes(root / "proc/kallsyms", KALLSYMS_MAX_BYTES)
        except OSError:
            data = b""
        return cls.parse(data)

    def __len__(self) -> int:
        return len(self._addresses)

    def _text(self, start: int, end: int) -> str:
        return self._data[start:end].decode("utf-8", errors="replace")

    def lookup(self, address: int) -> tuple[KernelSymbol, int] | None:
        """The symbol containing `address` and the offset into it, or None."""
        if not 0 <= address < 1 << 64 or not len(self._addresses):
            return None
        index = int(np.searchsorted(self._addresses, np.uint64(address), side="right")) - 1
        if index < 0:
            return None
        start = int(self._addresses[index])
        offset = address - start
        if offset >= MAX_FUNCTION_OFFSET:
            return None
        module_start, module_end = int(self._module_starts[index]), int(self._module_ends[index])
        symbol = KernelSymbol(self._text(int(self._name_starts[index]), int(self._name_ends[index])), start,
                              self._text(module_start, module_end) if module_end > module_start else None)
        return symbol, offset

    def symbolize(self, address: int) -> str:
        found = self.lookup(address)
        if found is None:
            return f"0x{address:x}"
        symbol, offset = found
        prefix = f"[{symbol.module}]" if symbol.module else ""
        return f"{prefix}{symbol.name}+0x{offset:x}"

    def function_ranges(self, name: str) -> list[tuple[int, int]]:
        """[start, end) of each kernel-image text symbol called `name` (a static function can
        have several); end is the next symbol's address, kallsyms having no sizes. Module
        symbols are left out: a module can be unloaded and its text reused."""
        pattern = re.compile(rb"^([0-9a-fA-F]{1,16}) [tTwW] " + re.escape(name.encode()) + rb"$", re.MULTILINE)
        ranges = []
        for match in pattern.finditer(self._data):
            start = int(match.group(1), 16)
            if not start:
                continue
            index = int(np.searchsorted(self._addresses, np.uint64(start), side="right"))
            end = int(self._addresses[index]) if index < len(self._addresses) else start + MAX_FUNCTION_OFFSET
            ranges.append((start, min(end, start + MAX_FUNCTION_OFFSET)))
        return sorted(set(ranges))

