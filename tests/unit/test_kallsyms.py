from pathlib import Path

from profiler.kernel.kallsyms import MAX_FUNCTION_OFFSET, Kallsyms

# A slice of a real 6.18 /proc/kallsyms, out of order on purpose, with data symbols
# (type d/b/D) and a module symbol mixed in.
KALLSYMS = """\
ffffffff82047670 t udp_queue_rcv_one_skb
ffffffff81000000 T _stext
ffffffff82047700 D some_data_symbol
ffffffff81e44f40 T sk_skb_reason_drop
ffffffff81e60af0 t enqueue_to_backlog
ffffffff820472d0 T __udp_enqueue_schedule_skb
ffffffffc0a01000 t nf_conntrack_in\t[nf_conntrack]
ffffffff82f00000 b some_bss_symbol
not an address line
ffffffff81e61000 W weak_helper
"""


def test_symbolizes_a_return_address_inside_a_function():
    table = Kallsyms.parse(KALLSYMS)
    assert table.symbolize(0xFFFFFFFF82047670 + 0x437) == "udp_queue_rcv_one_skb+0x437"
    assert table.symbolize(0xFFFFFFFF81E60AF0) == "enqueue_to_backlog+0x0"


def test_data_symbols_never_name_code():
    table = Kallsyms.parse(KALLSYMS)
    # Past the data symbol's address, the nearest text symbol below is still the function.
    assert table.symbolize(0xFFFFFFFF82047710) == "udp_queue_rcv_one_skb+0xa0"
    assert len(table) == 7


def test_module_symbols_carry_the_module():
    table = Kallsyms.parse(KALLSYMS)
    assert table.symbolize(0xFFFFFFFFC0A01010) == "[nf_conntrack]nf_conntrack_in+0x10"


def test_weak_symbols_count_as_text():
    assert Kallsyms.parse(KALLSYMS).symbolize(0xFFFFFFFF81E61004) == "weak_helper+0x4"


def test_addresses_outside_any_function_stay_hex():
    table = Kallsyms.parse(KALLSYMS)
    assert table.symbolize(0x1000) == "0x1000"
    far = 0xFFFFFFFFC0A01000 + MAX_FUNCTION_OFFSET
    assert table.symbolize(far) == f"0x{far:x}"


def test_restricted_kallsyms_gives_hex_not_wrong_names():
    # kptr_restrict shows every address as 0: nothing may be symbolized from that.
    restricted = "\n".join(f"0000000000000000 T {name}" for name in ("_stext", "udp_rcv", "tcp_v4_rcv"))
    table = Kallsyms.parse(restricted)
    assert len(table) == 0
    assert table.symbolize(0xFFFFFFFF82047AA7) == "0xffffffff82047aa7"


def test_load_reads_under_a_root(tmp_path: Path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/kallsyms").write_text(KALLSYMS)
    assert Kallsyms.load(tmp_path).symbolize(0xFFFFFFFF81E44F48) == "sk_skb_reason_drop+0x8"
    # No file at all (a container without /proc): an empty table, hex output.
    assert len(Kallsyms.load(tmp_path / "missing")) == 0


def _reference_symbols(text: str) -> list[tuple[int, str, str | None]]:
    """The table as a line-by-line reading of the format gives it, in address order (ties in
    file order): what the vectorised parser must agree with."""
    symbols = []
    for line in text.splitlines():
        head, _, module = line.partition("\t")
        parts = head.split(" ")
        if len(parts) != 3 or parts[1] not in ("t", "T", "w", "W") or not parts[2]:
            continue
        if not 1 <= len(parts[0]) <= 16 or any(c not in "0123456789abcdefABCDEF" for c in parts[0]):
            continue
        address = int(parts[0], 16)
        if address:
            symbols.append((address, parts[2], module.strip("[]") if module else None))
    return sorted(symbols, key=lambda s: s[0])


def test_vectorised_parse_agrees_with_a_line_by_line_reading_on_odd_lines():
    import random

    rng = random.Random(7)
    kinds = ["T", "t", "W", "w", "d", "D", "b", "U", "A", "r"]
    lines = []
    for i in range(3000):
        address = rng.choice([0, rng.randrange(1, 1 << 64), 0xFFFFFFFF81000000 + rng.randrange(1 << 24)])
        digits = f"{address:016x}" if rng.random() < 0.8 else f"{address:x}"
        digits = digits.upper() if rng.random() < 0.1 else digits
        if rng.random() < 0.03:
            digits = digits[:-1] + "g"          # not hex: skipped
        name = rng.choice(["tcp_v4_rcv", "udp_rcv.cold", "__x64_sys_read", "a", ""])
        line = f"{digits} {rng.choice(kinds)} {name}"
        if rng.random() < 0.2:
            line += f"\t[{rng.choice(['nf_conntrack', 'veth', 'x'])}]"
        if rng.random() < 0.02:
            line = rng.choice(["", "garbage", "ffff", "ffffffff81000000 T", "ffffffff81000000  T two_spaces"])
        lines.append(line)
    text = "\n".join(lines)
    table = Kallsyms.parse(text)
    expected = _reference_symbols(text)
    assert len(table) == len(expected)
    for address, name, module in expected[::17]:
        symbol, offset = table.lookup(address)
        assert symbol.address == address and offset == 0
        # Several symbols may share an address: the lookup names the last of them in the file.
        same = [s for s in expected if s[0] == address]
        assert (symbol.name, symbol.module) == same[-1][1:]


def test_hostile_bytes_parse_to_a_table_and_never_raise():
    import random

    rng = random.Random(3)
    for _ in range(50):
        blob = bytes(rng.randrange(256) for _ in range(rng.randrange(0, 400)))
        table = Kallsyms.parse(blob + b"\nffffffff81000000 T real_one\n")
        assert table.symbolize(0xFFFFFFFF81000010) == "real_one+0x10"
    assert len(Kallsyms.parse(b"")) == 0 and Kallsyms.parse("").symbolize(5) == "0x5"


def test_function_ranges_end_at_the_next_text_symbol():
    table = Kallsyms.parse(KALLSYMS + "ffffffff81e60b80 t enqueue_to_backlog\n")
    # Two static functions of one name; each ends where the next text symbol starts (the
    # data symbol in between is no function's end).
    assert table.function_ranges("enqueue_to_backlog") == [
        (0xFFFFFFFF81E60AF0, 0xFFFFFFFF81E60B80), (0xFFFFFFFF81E60B80, 0xFFFFFFFF81E61000)]
    assert table.function_ranges("udp_queue_rcv_one_skb") == [(0xFFFFFFFF82047670, 0xFFFFFFFF82047670 + MAX_FUNCTION_OFFSET)]
    assert table.function_ranges("nf_conntrack_in") == []      # a module's: its text can go away
    assert table.function_ranges("some_data_symbol") == []
    assert table.function_ranges("enqueue_to") == []            # whole names only
    assert table.function_ranges("udp.queue_rcv_one_skb") == []  # a name, not a pattern
    assert Kallsyms.parse("0000000000000000 t enqueue_to_backlog\n").function_ranges("enqueue_to_backlog") == []
