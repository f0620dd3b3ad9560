"""Drop reasons from call sites (kernels before 5.17): which functions, their text ranges,
and the rows the program reads."""
from __future__ import annotations

import ctypes
import re
from pathlib import Path

from profiler.kernel.kallsyms import Kallsyms
from profiler.probes.drop_sites import (
    SITE_FUNCTIONS, SITE_REASONS, SITE_ROWS, SiteRange, site_ranges, write_site_ranges,
)
from profiler.probes.drops import reason_cflags

DROPS_H = Path(__file__).resolve().parents[2] / "bpf" / "drops.h"

# Debian 11's 5.10, abridged: two of the functions, a module and an unrelated neighbour.
KALLSYMS_5_10 = Kallsyms.parse("""\
ffffffff8171e870 t enqueue_to_backlog
ffffffff8171ea60 t netif_rx_internal
ffffffff817fe590 T nf_hook_slow
ffffffff817fe640 T nf_hook_slow_list
ffffffff81858b10 t udp_queue_rcv_one_skb
ffffffff81859000 t udp_queue_rcv_skb
ffffffffc0300000 t nft_do_chain\t[nf_tables]
""")


def test_each_listed_function_has_a_reason_the_program_knows():
    assert SITE_REASONS[0] == "NOT_SPECIFIED"  # the program's "no reason here"
    assert {reason for _, reason in SITE_FUNCTIONS} <= set(SITE_REASONS.values())
    assert len({name for name, _ in SITE_FUNCTIONS}) == len(SITE_FUNCTIONS)


def test_ranges_of_the_functions_this_kernel_has():
    ranges = site_ranges(KALLSYMS_5_10)
    values = {name: value for value, name in SITE_REASONS.items()}
    assert ranges == [
        SiteRange(0xFFFFFFFF8171E870, 0xFFFFFFFF8171EA60, values["CPU_BACKLOG"], "enqueue_to_backlog"),
        SiteRange(0xFFFFFFFF81858B10, 0xFFFFFFFF81859000, values["SOCKET_RCVBUFF"], "udp_queue_rcv_one_skb"),
        SiteRange(0xFFFFFFFF817FE590, 0xFFFFFFFF817FE640, values["NETFILTER_DROP"], "nf_hook_slow"),
    ]
    # nft_do_chain is a module's here: left out (its text can be unloaded and reused).
    assert all(site.function != "nft_do_chain" for site in ranges)


def test_no_more_rows_than_the_program_reads():
    many = Kallsyms.parse("".join(f"ffffffff81{i:05x}0 t enqueue_to_backlog\n" for i in range(40)))
    assert len(site_ranges(many)) == SITE_ROWS
    header_rows = int(re.search(r"#define DROP_SITE_ROWS (\d+)", DROPS_H.read_text()).group(1))
    assert header_rows == SITE_ROWS


def test_no_function_known_gives_no_rows():
    assert site_ranges(Kallsyms.parse("")) == []  # kptr_restrict, or an unreadable kallsyms


def test_the_site_reasons_give_the_programs_macros():
    flags = reason_cflags(SITE_REASONS)
    assert "-DNETPROF_DROP_REASON_NOT_SPECIFIED=0U" in flags
    assert "-DNETPROF_DROP_REASON_SOCKET_RCVBUFF=2U" in flags
    # None of these exist before 5.17: never matched.
    assert "-DNETPROF_DROP_REASON_TCP_LISTEN_OVERFLOW=4294967295U" in flags
    assert "-DNETPROF_DROP_REASON_CONSUMED=4294967295U" in flags


def test_rows_are_written_then_ended_by_an_empty_one():
    class Row(ctypes.Structure):
        _fields_ = [("start", ctypes.c_uint64), ("end", ctypes.c_uint64), ("reason", ctypes.c_uint32),
                    ("_pad", ctypes.c_uint32)]

    class Table(dict):
        Key = ctypes.c_int
        Leaf = Row

        def __setitem__(self, key, value):
            super().__setitem__(key.value, (value.start, value.end, value.reason))

    table = Table()
    write_site_ranges(table, site_ranges(KALLSYMS_5_10))
    assert table == {0: (0xFFFFFFFF8171E870, 0xFFFFFFFF8171EA60, 1), 1: (0xFFFFFFFF81858B10, 0xFFFFFFFF81859000, 2),
                     2: (0xFFFFFFFF817FE590, 0xFFFFFFFF817FE640, 3), 3: (0, 0, 0)}
    # The C struct the program reads has the same fields.
    body = re.search(r"struct drop_site_reason \{(.*?)\};", DROPS_H.read_text(), re.S).group(1)
    assert re.findall(r"^\s*u\d+ (\w+);", body, re.M) == [name for name, _ in Row._fields_]
