"""CPU lists and masks as the kernel prints them (`0-3,8`, `ff,00000001`), and the online CPUs.

The parsers take file contents, like psutil's; the readers take a root (default `/`).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from pathlib import Path

from ..kernel.root_files import read_text_in_root

# The largest CONFIG_NR_CPUS mainline allows (x86 MAXSMP). A CPU number beyond it is garbage,
# and refusing it keeps a hostile "0-4000000000" from building a four-billion-element set.
MAX_CPUS = 8192

_HEADER_CPU = re.compile(r"^CPU([0-9]+)$")


_CPU_LIST_ITEM = re.compile(r"^(?P<low>[0-9]+)(?:-(?P<high>[0-9]+)(?::(?P<used>[0-9]+)/(?P<group>[0-9]+))?)?$")


def parse_cpu_list(text: str) -> frozenset[int]:
    """`0-3,8,10-11` (smp_affinity_list, cpu/online, local_cpulist) -> {0,1,2,3,8,10,11}.

    Also accepts the `a-b:used/group` stride form bitmap_parselist() takes on input.
    Raises ValueError on anything else.
    """
    cpus: set[int] = set()
    text = text.strip()
    if not text:
        return frozenset()
    for item in text.split(","):
        match = _CPU_LIST_ITEM.match(item.strip())
        if not match:
            raise ValueError(f"bad CPU list item: {item[:80]!r}")
        low = int(match["low"])
        high = int(match["high"]) if match["high"] is not None else low
        if high < low or high >= MAX_CPUS:
            raise ValueError(f"bad CPU range: {item!r}")
        if match["group"] is None:
            cpus.update(range(low, high + 1))
            continue
        used, group = int(match["used"]), int(match["group"])
        if not 0 < used <= group:
            raise ValueError(f"bad CPU list stride: {item!r}")
        cpus.update(cpu for cpu in range(low, high + 1) if (cpu - low) % group < used)
    return frozenset(cpus)


def format_cpu_list(cpus: Iterable[int]) -> str:
    """{0,1,2,3,8} -> `0-3,8`, the way the kernel prints CPU lists."""
    ranges: list[str] = []
    ordered = sorted(set(cpus))
    index = 0
    while index < len(ordered):
        low = high = ordered[index]
        while index + 1 < len(ordered) and ordered[index + 1] == high + 1:
            index += 1
            high = ordered[index]
        ranges.append(str(low) if low == high else f"{low}-{high}")
        index += 1
    return ",".join(ranges)


_MASK_WORD = re.compile(r"^[0-9a-fA-F]{1,8}$")


def parse_cpu_mask(text: str) -> frozenset[int]:
    """`ff,00000001` (rps_cpus, xps_cpus, smp_affinity) -> {0, 32..39}.

    Comma-separated 32-bit hex words, most significant first. Raises ValueError otherwise.
    """
    words = [word.strip() for word in text.strip().split(",")]
    # int(word, 16) alone would also take "0x3", "+3" and "f_f".
    if not all(_MASK_WORD.match(word) for word in words) or len(words) * 32 > MAX_CPUS:
        raise ValueError(f"bad CPU mask: {text[:80]!r}")
    value = 0
    for word in words:
        value = (value << 32) | int(word, 16)
    return frozenset(bit for bit in range(value.bit_length()) if value >> bit & 1)


def format_cpu_mask(cpus: Iterable[int], nr_cpus: int | None = None) -> str:
    """{0, 32..39} -> `ff,00000001`.

    With nr_cpus (the kernel's nr_cpu_ids) the layout is the kernel's own: the leading word
    only as wide as the CPUs beyond the last full 32, so a 2-CPU box reads `3` and a 40-CPU
    box `ff,ffffffff`. Without it, just wide enough for the highest CPU given.
    """
    cpu_set = set(cpus)
    if any(cpu < 0 or cpu >= MAX_CPUS for cpu in cpu_set):
        raise ValueError("CPU number out of range")
    width_bits = max(nr_cpus or 0, max(cpu_set, default=0) + 1, 1)
    value = sum(1 << cpu for cpu in cpu_set)
    leading_bits = width_bits % 32 or 32
    words: list[str] = []
    remaining_bits = width_bits
    while remaining_bits > 0:
        chunk_bits = leading_bits if not words else 32
        shift = remaining_bits - chunk_bits
        chunk = (value >> shift) & ((1 << chunk_bits) - 1)
        words.append(f"{chunk:0{(chunk_bits + 3) // 4}x}")
        remaining_bits = shift
    return ",".join(words)


def cpus_from_list_or_mask(root: Path, directory: str, stem: str) -> frozenset[int] | None:
    # Prefer the `_list` form; the mask form is the fallback kernels and recordings always have.
    text = read_text_in_root(root, f"{directory}/{stem}_list")
    parser = parse_cpu_list
    if text is None:
        text = read_text_in_root(root, f"{directory}/{stem}")
        parser = parse_cpu_mask
    if text is None:
        return None
    try:
        return parser(text)
    except ValueError:
        return None


def read_cpus_online(root: Path = Path("/")) -> frozenset[int]:
    text = read_text_in_root(root, "sys/devices/system/cpu/online")
    if text is not None:
        try:
            return parse_cpu_list(text)
        except ValueError:
            pass
    # Without sysfs, the CPUs /proc/interrupts has columns for are the online ones.
    interrupts = read_text_in_root(root, "proc/interrupts")
    return frozenset(interrupts_header_cpus(interrupts.splitlines()[0])) if interrupts else frozenset()


def interrupts_header_cpus(header: str) -> list[int]:
    cpus: list[int] = []
    for token in header.split():
        match = _HEADER_CPU.match(token)
        if not match or int(match.group(1)) >= MAX_CPUS:
            return []
        cpus.append(int(match.group(1)))
    return cpus
