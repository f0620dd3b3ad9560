"""/proc/net/stat/nf_conntrack across kernel versions, parsed by header, and its deltas.

KERNEL_6_18_* were recorded on this project's lab machine (6.18, 2 CPUs) right after the
conntrack race scenario. The older layouts are reproduced from those kernels'
`ct_cpu_seq_show()` format strings (header text and `%08x` columns, including the double
spaces and, before 4.x, the trailing space): 3.x without `search_restart`, 4.x with
`searched`/`delete_list` (no clash resolution), 5.9-5.14 with `clashres` but still
`delete_list`, on a 32-CPU node.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from profiler.system.conntrack import (
    ConntrackStats, counter_deltas, parse_stat_file, read_limits, stats_from_netlink,
)

KERNEL_6_18_RACE_2CPU = """\
entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
00000000  00000000 00000000 00000000 0000010f 00000000 00000000 00000000 00000000 0000264e 0000264e 00000000 00000000  00000000 00000000 00000000 00000000
00000000  00000000 00000000 00000000 0000010f 00000000 00000000 00000000 00000000 00002525 00002525 00000000 00000000  00000000 00000000 00000000 00000000
"""

KERNEL_6_18_FULL_2CPU = """\
entries  clashres found new invalid ignore delete chainlength insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
00000040  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000087 00000001 00000000  00000000 00000000 00000000 00000000
00000040  00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000000  00000000 00000000 00000000 00000000
"""

KERNEL_4_19_2CPU = """\
entries  searched found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
000003e8  00000000 0001a2b3 00000000 0000002a 00000000 00000000 00000000 00000000 00000007 00000009 00000002 00000003  00000000 00000000 00000000 00000011
000003e8  00000000 00019f00 00000000 00000010 00000000 00000000 00000000 00000000 00000005 00000005 00000000 00000001  00000000 00000000 00000000 00000004
"""

KERNEL_3_10_2CPU = """\
entries  searched found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete
00000010  00000a00 00000050 00000020 00000005 00000000 00000010 00000008 00000015 00000002 00000001 00000000 00000000  00000000 00000000 00000000 
00000010  00000800 00000030 00000010 00000003 00000000 00000005 00000004 0000000a 00000001 00000000 00000001 00000000  00000000 00000000 00000000 
"""

KERNEL_5_10_32CPU = """\
entries  clashres found new invalid ignore delete delete_list insert insert_failed drop early_drop icmp_error  expect_new expect_create expect_delete search_restart
0001f3a2  000000a5 00005124 00000000 00000019 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001  00000000 00000000 00000000 00000011
0001f3a2  00000030 0000bf23 00000000 00000025 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000008  00000000 00000000 00000000 00000006
0001f3a2  00000013 00002fe9 00000000 0000001b 00000000 00000000 00000000 00000000 00000003 00000003 00000000 00000001  00000000 00000000 00000000 00000007
0001f3a2  0000002e 00011e0a 00000000 0000001b 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000009  00000000 00000000 00000000 00000003
0001f3a2  00000072 000146c9 00000000 00000028 00000000 00000000 00000000 00000000 00000004 00000004 00000000 00000000  00000000 00000000 00000000 00000012
0001f3a2  0000012b 0000cf01 00000000 00000003 00000000 00000000 00000000 00000000 00000001 00000001 00000000 00000000  00000000 00000000 00000000 00000011
0001f3a2  00000044 0000982f 00000000 0000001a 00000000 00000000 00000000 00000000 00000001 00000001 00000000 00000008  00000000 00000000 00000000 00000003
0001f3a2  00000124 0000a1d9 00000000 00000023 00000000 00000000 00000000 00000000 00000001 00000001 00000000 00000001  00000000 00000000 00000000 00000012
0001f3a2  00000124 00014b07 00000000 0000000c 00000000 00000000 00000000 00000000 00000002 00000002 00000000 00000001  00000000 00000000 00000000 00000011
0001f3a2  00000020 000124dc 00000000 00000003 00000000 00000000 00000000 00000000 00000004 00000004 00000000 00000003  00000000 00000000 00000000 0000000f
0001f3a2  00000110 0000ded5 00000000 00000031 00000000 00000000 00000000 00000000 00000002 00000002 00000000 00000007  00000000 00000000 00000000 00000012
0001f3a2  000000e8 0000bd09 00000000 00000013 00000000 00000000 00000000 00000000 00000001 00000001 00000000 00000002  00000000 00000000 00000000 00000007
0001f3a2  00000029 00012a02 00000000 00000013 00000000 00000000 00000000 00000000 00000004 00000004 00000000 00000007  00000000 00000000 00000000 0000000a
0001f3a2  000000e5 00009754 00000000 00000026 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000001  00000000 00000000 00000000 00000010
0001f3a2  000000d6 0000585d 00000000 00000030 00000000 00000000 00000000 00000000 00000002 00000002 00000000 00000002  00000000 00000000 00000000 0000000f
0001f3a2  000000d7 000017fa 00000000 0000002a 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000008  00000000 00000000 00000000 00000012
0001f3a2  000000a0 0000b20c 00000000 0000002c 00000000 00000000 00000000 00000000 00000002 00000002 00000000 00000009  00000000 00000000 00000000 0000000f
0001f3a2  00000128 0000ed7b 00000000 00000004 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000004  00000000 00000000 00000000 0000000f
0001f3a2  00000021 000022f8 00000000 0000002e 00000000 00000000 00000000 00000000 00000002 00000002 00000000 00000009  00000000 00000000 00000000 0000000e
0001f3a2  00000091 0000c96e 00000000 0000002a 00000000 00000000 00000000 00000000 00000002 00000002 00000000 00000000  00000000 00000000 00000000 0000000e
0001f3a2  000000b5 000059f2 00000000 00000027 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000007  00000000 00000000 00000000 00000001
0001f3a2  0000006f 00009712 00000000 00000008 00000000 00000000 00000000 00000000 00000001 00000001 00000000 00000006  00000000 00000000 00000000 0000000c
0001f3a2  000000fe 00002d29 00000000 0000000a 00000000 00000000 00000000 00000000 00000003 00000003 00000000 00000006  00000000 00000000 00000000 00000011
0001f3a2  0000008e 00004a03 00000000 0000001b 00000000 00000000 00000000 00000000 00000004 00000004 00000000 00000004  00000000 00000000 00000000 0000000d
0001f3a2  000000b7 0000c6b1 00000000 0000000e 00000000 00000000 00000000 00000000 00000001 00000001 00000000 00000001  00000000 00000000 00000000 00000005
0001f3a2  0000004d 00007aab 00000000 0000002a 00000000 00000000 00000000 00000000 00000001 00000001 00000000 00000000  00000000 00000000 00000000 0000000f
0001f3a2  0000005d 00008a6e 00000000 00000012 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000002  00000000 00000000 00000000 0000000d
0001f3a2  00000111 0000c0f6 00000000 00000027 00000000 00000000 00000000 00000000 00000004 00000004 00000000 00000005  00000000 00000000 00000000 00000004
0001f3a2  00000107 0001401d 00000000 00000029 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000007  00000000 00000000 00000000 00000011
0001f3a2  000000c8 0000cfb7 00000000 00000019 00000000 00000000 00000000 00000000 00000003 00000003 00000000 00000001  00000000 00000000 00000000 0000000f
0001f3a2  000000cd 000023c6 00000000 0000000c 00000000 00000000 00000000 00000000 00000000 00000000 00000000 00000003  00000000 00000000 00000000 0000000e
0001f3a2  00000053 00003c30 00000000 00000015 00000000 00000000 00000000 00000000 00000004 00000004 00000000 00000000  00000000 00000000 00000000 00000003
"""


def test_6_18_race_sums_over_cpus():
    stats = parse_stat_file(KERNEL_6_18_RACE_2CPU)
    assert len(stats.per_cpu) == 2
    totals = stats.totals()
    assert totals["insert_failed"] == 0x264E + 0x2525 == totals["drop"]
    assert totals["invalid"] == 2 * 0x10F
    # Columns are named by the header and renamed to the kernel's field names.
    assert "clash_resolve" in totals and "chaintoolong" in totals and "error" in totals
    assert "clashres" not in totals and "icmp_error" not in totals


def test_entries_is_a_level_not_summed_over_cpus():
    stats = parse_stat_file(KERNEL_6_18_FULL_2CPU)
    assert stats.entries == 64  # printed on every CPU's row; the netns has 64, not 128
    assert "entries" not in stats.totals()
    assert stats.totals()["drop"] == 135 and stats.totals()["early_drop"] == 1


def test_4_19_has_no_clash_resolution_column():
    stats = parse_stat_file(KERNEL_4_19_2CPU)
    totals = stats.totals()
    assert "clash_resolve" not in totals and "chaintoolong" not in totals
    assert totals["insert_failed"] == 12 and totals["drop"] == 14 and totals["early_drop"] == 2
    assert totals["search_restart"] == 0x15 and totals["error"] == 4
    assert stats.entries == 1000


def test_3_10_without_search_restart_and_trailing_space():
    stats = parse_stat_file(KERNEL_3_10_2CPU)
    totals = stats.totals()
    assert "search_restart" not in totals
    assert totals["searched"] == 0xA00 + 0x800
    assert totals["insert_failed"] == 3 and totals["drop"] == 1 and totals["early_drop"] == 1


def test_32_cpus_with_clashres_and_delete_list():
    stats = parse_stat_file(KERNEL_5_10_32CPU)
    assert len(stats.per_cpu) == 32
    assert stats.entries == 0x1F3A2
    totals = stats.totals()
    assert totals["clash_resolve"] == 5277
    assert totals["insert_failed"] == totals["drop"] == 52
    assert totals["invalid"] == 882 and totals["error"] == 123 and totals["search_restart"] == 392
    assert "delete_list" in totals and "chaintoolong" not in totals


@pytest.mark.parametrize("text", ["", "Tcp: RtoAlgorithm\nTcp: 1\n",
                                  "entries found\n00000001\n"])
def test_not_a_conntrack_file_is_refused(text):
    with pytest.raises(ValueError):
        parse_stat_file(text)


def _stats(per_cpu: list[dict[str, int]], entries: int = 0) -> ConntrackStats:
    return ConntrackStats(entries=entries, per_cpu=tuple(per_cpu))


def test_deltas_per_cpu_summed():
    before = _stats([{"drop": 10, "insert_failed": 1}, {"drop": 5, "insert_failed": 0}])
    after = _stats([{"drop": 15, "insert_failed": 1}, {"drop": 9, "insert_failed": 3}])
    assert counter_deltas(before, after) == {"drop": 9, "insert_failed": 3}


def test_deltas_across_a_32_bit_wrap():
    before = _stats([{"drop": 0xFFFFFFF0}])
    after = _stats([{"drop": 0x10}])
    assert counter_deltas(before, after) == {"drop": 0x20}


def test_deltas_after_a_reset_count_from_zero():
    # The netns died and a new one reused its inode: its counters start again from zero.
    before = _stats([{"drop": 5000}])
    after = _stats([{"drop": 7}])
    assert counter_deltas(before, after) == {"drop": 7}


def test_first_reading_has_no_baseline():
    assert counter_deltas(None, parse_stat_file(KERNEL_6_18_FULL_2CPU))["drop"] == 135


def test_netlink_rows_use_the_same_names_as_procfs():
    rows = [
        {"cpu": 1, "found": 0, "invalid": 2, "insert": 0, "insert_failed": 4, "drop": 4,
         "early_drop": 0, "error": 0, "search_restart": 0, "clash_resolve": 7, "chain_toolong": 1},
        {"cpu": 0, "found": 0, "invalid": 1, "insert": 0, "insert_failed": 1, "drop": 1,
         "early_drop": 0, "error": 0, "search_restart": 0, "clash_resolve": 3, "chain_toolong": 0},
    ]
    stats = stats_from_netlink(rows, entries=12)
    assert stats.entries == 12
    assert stats.per_cpu[0]["insert_failed"] == 1  # ordered by CPU
    totals = stats.totals()
    assert totals["clash_resolve"] == 10 and totals["chaintoolong"] == 1 and totals["drop"] == 5
    procfs_names = set(parse_stat_file(KERNEL_6_18_RACE_2CPU).counter_names)
    assert set(stats.counter_names) <= procfs_names


def test_limits_from_a_fixture_root(tmp_path: Path):
    assert read_limits(tmp_path) is None  # nf_conntrack not loaded
    directory = tmp_path / "proc/sys/net/netfilter"
    directory.mkdir(parents=True)
    (directory / "nf_conntrack_max").write_text("262144\n")
    (directory / "nf_conntrack_buckets").write_text("65536\n")
    limits = read_limits(tmp_path)
    assert limits is not None and limits.max_entries == 262144 and limits.buckets == 65536
