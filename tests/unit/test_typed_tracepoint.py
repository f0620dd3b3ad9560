"""Loading a BCC-compiled program as tp_btf (profiler/kernel/typed_tracepoint.py): the parts
that need no kernel. The load itself is tested on the real kernel (tests/integration/
test_drops.py: the typed program counts, and a refused one falls back)."""
from __future__ import annotations

import ctypes

from profiler.kernel.typed_tracepoint import _ProgLoadAttr, _RawTracepointOpenAttr, function_name, verifier_reason
from profiler.probes.drops import hook_via


def test_the_load_attr_lies_where_the_kernel_reads_it():
    # Offsets of union bpf_attr's BPF_PROG_LOAD members in include/uapi/linux/bpf.h: a field
    # one word off would send the kernel a zero attach type and a garbage BTF id.
    expected = {"prog_type": 0, "insn_cnt": 4, "insns": 8, "license": 16, "log_level": 24, "log_size": 28,
                "log_buf": 32, "kern_version": 40, "prog_flags": 44, "prog_name": 48, "prog_ifindex": 64,
                "expected_attach_type": 68, "prog_btf_fd": 72, "func_info_rec_size": 76, "func_info": 80,
                "func_info_cnt": 88, "line_info_rec_size": 92, "line_info": 96, "line_info_cnt": 104,
                "attach_btf_id": 108, "attach_btf_obj_fd": 112}
    assert {name: getattr(_ProgLoadAttr, name).offset for name in expected} == expected
    assert _RawTracepointOpenAttr.prog_fd.offset == 8
    assert ctypes.sizeof(_ProgLoadAttr) <= 128


def test_the_verifiers_reason_is_its_last_word_in_printable_ascii():
    log = (b"0: R1=ctx() R10=fp0\n; const void *rx_sk = (const void *)args[3];\n"
           b"func 'sock_rcvqueue_full' doesn't have 4-th argument\x1b[31m\x07\n"
           b"invalid bpf_context access off=24 size=8\n"
           b"processed 12 insns (limit 1000000) max_states_per_insn 0\n\0garbage after the end\n")
    assert verifier_reason(log) == "invalid bpf_context access off=24 size=8"
    assert verifier_reason(b"\x1b]0;title\x07\n\0") == "]0;title"
    assert verifier_reason(b"") == ""
    assert len(verifier_reason(b"x" * 1000)) == 160


def test_methods_name_the_hook_and_why_typed_was_refused():
    assert function_name("kfree_skb") == "tp_btf__kfree_skb"
    assert hook_via("kfree_skb", typed=True) == "tp_btf:kfree_skb"
    assert hook_via("kfree_skb", typed=False, from_sites=True) == "raw_tracepoint:kfree_skb (reasons from call sites)"
    assert hook_via("kfree_skb", False, typed_refusal="the kernel refused tp_btf:kfree_skb (EACCES)") == (
        "raw_tracepoint:kfree_skb (the kernel refused tp_btf:kfree_skb (EACCES))")
