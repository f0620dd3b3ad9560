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
