"""The BTF reader on a hand-built blob (every kind it must walk past) and on this kernel."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from profiler.kernel.btf import (
    KIND_ARRAY, KIND_DECL_TAG, KIND_ENUM, KIND_ENUM64, KIND_FUNC, KIND_FUNC_PROTO, KIND_INT, KIND_PTR,
    KIND_STRUCT, KIND_TYPE_TAG, KIND_TYPEDEF, KIND_UNION, Btf, BtfError,
)


class BlobBuilder:
    def __init__(self):
        self.strings = bytearray(b"\0")
        self.types = bytearray()

    def s(self, text: str) -> int:
        if not text:
            return 0
        off = len(self.strings)
        self.strings += text.encode() + b"\0"
        return off

    def add(self, name, kind, vlen, size_or_type, extra=b"", kind_flag=0):
        info = (kind_flag << 31) | (kind << 24) | vlen
        self.types += struct.pack("<III", self.s(name), info, size_or_type) + extra

    def members(self, items):
        return b"".join(struct.pack("<III", self.s(n), t, off) for n, t, off in items)

    def blob(self) -> bytes:
        hdr_len = 24
        header = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, hdr_len, 0, len(self.types),
                             len(self.types), len(self.strings))
        return header + bytes(self.types) + bytes(self.strings)


@pytest.fixture
def btf() -> Btf:
    b = BlobBuilder()
    b.add("int", KIND_INT, 0, 4, struct.pack("<I", 32))                         # 1
    b.add("inner", KIND_STRUCT, 2, 8, b.members([("a", 1, 0), ("b", 1, 32)]))  # 2
    b.add("", KIND_UNION, 2, 8, b.members([("x", 1, 0), ("nested", 2, 0)]))    # 3
    b.add("", KIND_DECL_TAG, 0, 2, struct.pack("<i", -1))                       # 4
    b.add("", KIND_FUNC_PROTO, 2, 1, struct.pack("<IIII", 0, 1, 0, 1))          # 5
    b.add("", KIND_ARRAY, 0, 0, struct.pack("<III", 1, 1, 4))                   # 6
    b.add("outer", KIND_STRUCT, 3, 24, b.members([("first", 1, 0), ("", 3, 64), ("tail", 6, 128)]))  # 7
    b.add("color", KIND_ENUM, 2, 4, struct.pack("<Ii", b.s("RED"), 0) + struct.pack("<Ii", b.s("BLUE"), 5))  # 8
    b.add("big", KIND_ENUM64, 1, 8, struct.pack("<III", b.s("HUGE"), 0, 1 << 8))  # 9
    b.add("inner_t", KIND_TYPEDEF, 0, 2)                                         # 10
    b.add("", KIND_TYPE_TAG, 0, 10)                                              # 11
    b.add("", KIND_PTR, 0, 7)                                                    # 12
    b.add("with_typedef", KIND_STRUCT, 2, 16, b.members([("p", 12, 0), ("m", 11, 64)]))  # 13
    b.add("", KIND_ENUM, 2, 4, struct.pack("<Ii", b.s("HI_SOFTIRQ"), 0) + struct.pack("<Ii", b.s("NET_RX_SOFTIRQ"), 3))  # 14
    return Btf(b.blob())


def test_walks_every_kind(btf):
    assert btf.type_count == 14


def test_offsets_through_anonymous_union_and_nested_struct(btf):
    assert btf.field_offset("outer", "first") == 0
    assert btf.field_offset("outer", "x") == 8
    assert btf.field_offset("outer", "nested.b") == 12
    assert btf.field_offset("outer", "tail") == 16


def test_offsets_look_through_typedef_and_type_tag(btf):
    assert btf.field_offset("with_typedef", "m.b") == 12


def test_sizes(btf):
    assert btf.size(btf.find("outer", {KIND_STRUCT})) == 24
    assert btf.size(6) == 16


def test_enums(btf):
    assert btf.enum("color") == {"RED": 0, "BLUE": 5}
    assert btf.enum("big") == {"HUGE": 1 << 40}
    assert btf.enum_containing("NET_RX_SOFTIRQ") == {"HI_SOFTIRQ": 0, "NET_RX_SOFTIRQ": 3}


def test_missing_things_raise_clear_errors(btf):
    with pytest.raises(BtfError, match="no member 'nope'"):
        btf.field_offset("outer", "nope")
    with pytest.raises(BtfError, match="no struct named 'absent'"):
        btf.field_offset("absent", "x")
    with pytest.raises(BtfError, match="not BTF"):
        Btf(b"\0" * 32)
    with pytest.raises(BtfError, match="no BTF at"):
        Btf.from_file(Path("/nonexistent/vmlinux"))


def test_a_kernel_without_drop_reasons_has_an_empty_table(btf):
    # Linux 5.10 (Debian 11) has BTF but no enum skb_drop_reason (added in 5.17): reading
    # the layout failed there, and took every probe down with it.
    from profiler.kernel.offsets import drop_reasons_of

    with pytest.raises(BtfError):
        btf.enum("skb_drop_reason")
    assert drop_reasons_of(btf) == {}


def _kfree_skb_prototype(with_reason: bool) -> Btf:
    """btf_trace_kfree_skb as 5.10 (skb, location) or 6.18 (…, reason, rx_sk) declare it."""
    b = BlobBuilder()
    b.add("sk_buff", KIND_STRUCT, 0, 8)                                          # 1
    b.add("", KIND_PTR, 0, 1)                                                    # 2
    b.add("", KIND_PTR, 0, 0)                                                    # 3: void *
    b.add("skb_drop_reason", KIND_ENUM, 1, 4, struct.pack("<Ii", b.s("SKB_DROP_REASON_NOT_SPECIFIED"), 2))  # 4
    b.add("sock", KIND_STRUCT, 0, 8)                                             # 5
    b.add("", KIND_PTR, 0, 5)                                                    # 6
    params = [3, 2, 3, *((4, 6) if with_reason else ())]
    b.add("", KIND_FUNC_PROTO, len(params), 0, b"".join(struct.pack("<II", 0, t) for t in params))  # 7
    b.add("", KIND_PTR, 0, 7)                                                    # 8
    b.add("btf_trace_kfree_skb", KIND_TYPEDEF, 0, 8)                             # 9
    return Btf(b.blob())


def test_a_raw_tracepoints_arguments_come_from_its_btf_typedef(btf):
    # The first parameter (the tracepoint's `void *__data`) is not an argument.
    assert _kfree_skb_prototype(False).raw_tracepoint_params("kfree_skb") == ("struct sk_buff *", "void *")
    assert _kfree_skb_prototype(True).raw_tracepoint_params("kfree_skb") == (
        "struct sk_buff *", "void *", "enum skb_drop_reason", "struct sock *")
    assert btf.raw_tracepoint_params("kfree_skb") is None


def test_a_typed_programs_attach_id_is_its_tracepoints_typedef(btf):
    # The id bpf(BPF_PROG_LOAD) gets as attach_btf_id for tp_btf: the typedef, not the proto.
    assert _kfree_skb_prototype(True).raw_tracepoint_type_id("kfree_skb") == 9
    assert btf.raw_tracepoint_type_id("kfree_skb") is None


def test_an_fentry_programs_attach_id_is_its_functions_func():
    # The id an fentry program is loaded against: the FUNC, not its FUNC_PROTO, and not a
    # struct or typedef that happens to share the name.
    b = BlobBuilder()
    b.add("int", KIND_INT, 0, 4, struct.pack("<I", 32))                          # 1
    b.add("", KIND_FUNC_PROTO, 2, 1, struct.pack("<IIII", b.s("fd"), 1, b.s("backlog"), 1))  # 2
    b.add("__sys_listen", KIND_TYPEDEF, 0, 1)                                     # 3
    b.add("__sys_listen", KIND_FUNC, 0, 2)                                        # 4
    assert Btf(b.blob()).function_type_id("__sys_listen") == 4
    assert Btf(b.blob()).function_type_id("inet_listen") is None


@pytest.mark.skipif(not Path("/sys/kernel/btf/vmlinux").is_file(), reason="this kernel has no BTF")
def test_live_kernel_btf_has_what_netprof_needs():
    from profiler.kernel.offsets import read_layout

    layout = read_layout(Btf.from_file())
    assert set(layout.offsets) >= {"NETPROF_SOCK_NET_OFFSET", "NETPROF_NET_INUM_OFFSET",
                                   "NETPROF_SKB_TCP_GSO_SEGS_OFFSET"}
    assert layout.offsets["NETPROF_SOCK_NET_OFFSET"] == Btf.from_file().field_offset("sock", "__sk_common.skc_net")
    # Each offset lies inside its outermost struct (a bound of 4096 held on 6.18 but not on
    # Debian's 6.1, whose struct net is bigger).
    from profiler.kernel.offsets import OFFSET_MACROS

    btf = Btf.from_file()
    for macro, parts in OFFSET_MACROS.items():
        outer = btf.size(btf.find(parts[0][0], {KIND_STRUCT}))
        assert 0 <= layout.offsets[macro] < outer, (macro, layout.offsets[macro], outer)
    names = set(layout.drop_reasons.values())
    # TCP_LISTEN_OVERFLOW is newer than Debian's 6.1 (tests/kernels), which has the others.
    assert {"NOT_SPECIFIED", "CPU_BACKLOG", "SOCKET_RCVBUFF", "NETFILTER_DROP"} <= names
    assert {"NET_RX", "NET_TX"} <= set(layout.softirq_vectors.values())
    assert layout.kfree_skb_args is not None and layout.kfree_skb_args[:2] == ("struct sk_buff *", "void *")
    assert set(layout.typed_tracepoint_ids) == {"kfree_skb", "sock_rcvqueue_full"}
    assert set(layout.fentry_function_ids) == {"__sys_listen"}
    # The tracepoint's own print fmt names the same numbers as BTF.
    fmt = Path("/sys/kernel/tracing/events/skb/kfree_skb/format")
    if fmt.exists():
        from profiler.kernel.offsets import parse_print_symbolic

        from_tracefs = parse_print_symbolic(fmt.read_text(), "reason")
        assert from_tracefs and all(layout.drop_reasons[v] == n for v, n in from_tracefs.items())
