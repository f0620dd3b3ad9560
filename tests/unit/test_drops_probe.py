"""The drop probe's kernel-independent parts: reason names and macros, tracepoint fields,
and the agreement of bpf/drops.h with the Python side."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from profiler.kernel.features import tracepoint_fields
from profiler.kernel.offsets import parse_print_symbolic
from profiler.probes.drops import (
    COUNT, DROP_KEY, FLOW_KEY, LISTEN_KEY, UNCOUNTED_SLOTS, KfreeSkbArguments, fold_drop_counts, kfree_skb_arguments,
    program_cflags, reason_cflags, reason_name,
)

DROPS_H = Path(__file__).resolve().parents[2] / "bpf" / "drops.h"

# 6.18's format file, abridged.
KFREE_SKB_FORMAT = """\
name: kfree_skb
ID: 2310
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:void * location;\toffset:16;\tsize:8;\tsigned:0;
\tfield:void * rx_sk;\toffset:24;\tsize:8;\tsigned:0;
\tfield:unsigned short protocol;\toffset:32;\tsize:2;\tsigned:0;
\tfield:enum skb_drop_reason reason;\toffset:36;\tsize:4;\tsigned:0;

print fmt: "skbaddr=%p reason: %s", REC->skbaddr, __print_symbolic(REC->reason, { 2, "NOT_SPECIFIED" }, { 3, "NO_SOCKET" }, { 6, "SOCKET_RCVBUFF" }, { 40, "TCP_LISTEN_OVERFLOW" }, { 71, "CPU_BACKLOG" })
"""


def test_reason_names_come_from_the_kernels_table():
    names = {6: "SOCKET_RCVBUFF", 71: "CPU_BACKLOG"}
    assert reason_name(6, names) == "SOCKET_RCVBUFF"
    assert reason_name(300, names) == "REASON_300"
    # Other subsystems (mac80211, openvswitch) code their reasons in the high 16 bits.
    assert reason_name((2 << 16) | 5, names) == "SUBSYSTEM_2_5"


def test_reason_macros_use_this_kernels_values():
    flags = reason_cflags({0: "SKB_NOT_DROPPED_YET", 1: "SKB_CONSUMED", 2: "NOT_SPECIFIED", 40: "TCP_LISTEN_OVERFLOW"})
    assert "-DNETPROF_DROP_REASON_NOT_SPECIFIED=2U" in flags
    assert "-DNETPROF_DROP_REASON_CONSUMED=1U" in flags
    assert "-DNETPROF_DROP_REASON_TCP_LISTEN_OVERFLOW=40U" in flags
    # A kernel renumbered (values differ between versions): the macros follow.
    shifted = reason_cflags({3: "NOT_SPECIFIED", 41: "TCP_LISTEN_OVERFLOW"})
    assert "-DNETPROF_DROP_REASON_NOT_SPECIFIED=3U" in shifted


def test_reasons_missing_from_an_older_kernel_never_match():
    # Kernels before 6.0 have no SKB_NOT_DROPPED_YET/SKB_CONSUMED; tracefs formats never list them.
    flags = reason_cflags(parse_print_symbolic(KFREE_SKB_FORMAT, "reason"))
    assert "-DNETPROF_DROP_REASON_CONSUMED=4294967295U" in flags
    assert "-DNETPROF_DROP_REASON_NOT_SPECIFIED=2U" in flags


def test_tracepoint_fields_from_the_format_file(tmp_path: Path):
    event = tmp_path / "events/skb/kfree_skb"
    event.mkdir(parents=True)
    (event / "format").write_text(KFREE_SKB_FORMAT)
    fields = tracepoint_fields(str(tmp_path), "skb/kfree_skb")
    assert {"skbaddr", "location", "rx_sk", "protocol", "reason"} <= fields
    assert tracepoint_fields(str(tmp_path), "sock/sock_rcvqueue_full") == set()
    assert tracepoint_fields(None, "skb/kfree_skb") == set()


LINUX_5_10_ARGS = ("struct sk_buff *", "void *")
LINUX_6_18_ARGS = ("struct sk_buff *", "void *", "enum skb_drop_reason", "struct sock *")


def test_kfree_skbs_arguments_come_from_btf_before_tracefs():
    # BTF is the prototype the kernel checks the raw tracepoint program against: it wins
    # over a format file, and holds when tracefs cannot be read (a FIFO planted there):
    # 5.10 taken for a current kernel read args[2] and the attach failed with EINVAL.
    format_reads: list[int] = []

    def fields(described: set[str]):
        def read() -> set[str]:
            format_reads.append(1)
            return described
        return read

    assert kfree_skb_arguments(LINUX_5_10_ARGS, fields(set())) == KfreeSkbArguments(False, False)
    assert kfree_skb_arguments(LINUX_6_18_ARGS, fields({"skbaddr", "location"})) == KfreeSkbArguments(True, True)
    assert kfree_skb_arguments(LINUX_6_18_ARGS[:3], fields(set())) == KfreeSkbArguments(True, False)
    assert format_reads == []  # with BTF the format file is never read
    # Headers path, no BTF: the format file says.
    assert kfree_skb_arguments(None, fields({"skbaddr", "location", "protocol"})) == KfreeSkbArguments(False, False)
    assert kfree_skb_arguments(None, fields({"skbaddr", "location", "reason"})) == KfreeSkbArguments(True, False)
    # Neither: a current kernel is assumed, and a wrong guess fails the attach visibly.
    assert kfree_skb_arguments(None, fields(set())) == KfreeSkbArguments(True, True)
    assert len(format_reads) == 3


def test_the_receiving_socket_is_read_only_where_the_kernel_passes_it():
    def rx_sk_flag(arguments):
        return "-DNETPROF_KFREE_SKB_HAS_RX_SK" in program_cflags("6.18.0", arguments, {}, False, flows=False)

    assert rx_sk_flag(kfree_skb_arguments(LINUX_6_18_ARGS, set))
    assert not rx_sk_flag(kfree_skb_arguments(LINUX_5_10_ARGS, set))


def _c_struct_fields(name: str) -> list[str]:
    text = DROPS_H.read_text()
    body = re.search(rf"struct {name} \{{(.*?)\}};", text, re.S).group(1)
    return re.findall(r"^\s*u\d+ (\w+)(?:\[\d+\])?;", body, re.M)


def test_key_dtypes_follow_the_c_structs_field_for_field():
    # Sizes are checked against the loaded program in tests/integration/test_drops.py.
    assert list(DROP_KEY.names) == _c_struct_fields("drop_key")
    assert list(LISTEN_KEY.names) == _c_struct_fields("listen_overflow_key")
    assert (DROP_KEY.itemsize, LISTEN_KEY.itemsize) == (16, 8)
    assert DROP_KEY.fields["location"][1] == 0 and DROP_KEY.alignment <= 8
    assert np.dtype(LISTEN_KEY).fields["port"][0] == np.dtype("<u2")
    # Drops per TCP flow: 8 + 4 + 4 + 4 × 2 + 2 × 16 bytes, addresses last, no padding.
    assert list(FLOW_KEY.names) == _c_struct_fields("drop_flow_key")
    assert FLOW_KEY.itemsize == 56 and FLOW_KEY.fields["saddr"][1] == 24 and FLOW_KEY.fields["daddr"][1] == 40


def test_uncounted_slots_in_the_headers_order():
    text = DROPS_H.read_text()
    slots = dict((name, int(value)) for name, value in re.findall(r"UNCOUNTED_(\w+) = (\d+)", text))
    total = slots.pop("SLOTS")
    assert total == len(UNCOUNTED_SLOTS)
    by_value = [name for name, _ in sorted(slots.items(), key=lambda item: item[1])]
    expected = ["NOT_SPECIFIED", "NOT_A_DROP", "DROPS_MAP_FULL", "LISTEN_MAP_FULL", "RCVQUEUE_MAP_FULL"]
    assert by_value == expected
    assert UNCOUNTED_SLOTS == ("not_specified", "not_a_drop", "drops_by_netns_reason_site",
                               "listen_overflows_by_port", "rcvqueue_full_by_netns")


def test_the_kernels_per_cpu_counters_fold_into_pod_cpu_and_site_views():
    web, db = 4026532001, 4026532002
    rcvbuf, backlog = 6, 15
    udp_rcv, enqueue = 0xffffffff81a00000, 0xffffffff81b00000
    keys = np.array([(udp_rcv, web, rcvbuf), (udp_rcv, db, rcvbuf), (enqueue, web, backlog),
                     (enqueue, db, backlog)], DROP_KEY)
    per_cpu = np.zeros((4, 2), COUNT)
    per_cpu["count"] = [[10, 1], [0, 20], [3, 0], [0, 4]]
    views = fold_drop_counts(keys, per_cpu)

    by_pod = {(int(k["netns_inode"]), int(k["reason"])): int(c) for k, c in zip(views.netns_reasons, views.per_netns_reason["count"])}
    assert by_pod == {(web, rcvbuf): 11, (db, rcvbuf): 20, (web, backlog): 3, (db, backlog): 4}
    by_cpu = {int(k["reason"]): list(map(int, c)) for k, c in zip(views.cpu_reasons, views.per_cpu_reason["count"])}
    assert by_cpu == {rcvbuf: [10, 21], backlog: [3, 4]}
    by_site = {(int(k["location"]), int(k["reason"])): int(c) for k, c in zip(views.sites, views.per_site["count"])}
    assert by_site == {(udp_rcv, rcvbuf): 31, (enqueue, backlog): 7}
    # The same total whichever way it is cut.
    total = int(per_cpu["count"].sum())
    assert total == views.per_netns_reason["count"].sum() == views.per_cpu_reason["count"].sum() == views.per_site["count"].sum()


def test_an_empty_map_folds_into_empty_views_with_a_column_per_cpu():
    views = fold_drop_counts(np.zeros(0, DROP_KEY), np.zeros((0, 3), COUNT))
    assert len(views.netns_reasons) == len(views.sites) == 0
    assert views.per_cpu_reason.shape == (0, 3)


def test_kernels_before_6_1_get_a_preallocated_drop_map():
    # 5.10 warned "trace type BPF program uses run-time allocation" at load: allocating from a
    # tracepoint that can fire inside the allocator is unsafe before bpf_mem_alloc (6.1).
    from profiler.probes.drops import MAX_DROP_KEYS, MAX_DROP_KEYS_PREALLOCATED, drop_map_cflags

    assert drop_map_cflags("5.10.0-32-amd64") == ["-DNETPROF_DROPS_PREALLOC",
                                                  f"-DNETPROF_DROPS_MAX_KEYS={MAX_DROP_KEYS_PREALLOCATED}"]
    assert drop_map_cflags("6.0.19") == drop_map_cflags("5.10.0-32-amd64")
    assert drop_map_cflags("6.1.0-41-amd64") == [f"-DNETPROF_DROPS_MAX_KEYS={MAX_DROP_KEYS}"]
    assert drop_map_cflags("6.18.44-fc") == [f"-DNETPROF_DROPS_MAX_KEYS={MAX_DROP_KEYS}"]
