"""Stack frames name the function the source names, not the compiler's copy of it (Debian's
6.1 has `__tcp_retransmit_skb.part.0` where 6.18 has `__tcp_retransmit_skb`)."""
from __future__ import annotations

import pytest

from profiler.kernel.kallsyms import Kallsyms
from profiler.kernel.stacks import frame_name, source_function_name

KALLSYMS = """\
ffffffff81a00000 t __tcp_retransmit_skb.part.0
ffffffff81a01000 T tcp_retransmit_skb
ffffffff81a02000 t tcp_rcv_established.cold
ffffffff81a03000 t nft_do_chain.isra.0.constprop.0\t[nf_tables]
ffffffff81a04000 T part.0
"""


@pytest.mark.parametrize("symbol, name", [
    ("__tcp_retransmit_skb.part.0", "__tcp_retransmit_skb"),
    ("tcp_rcv_established.cold", "tcp_rcv_established"),
    ("foo.isra.0.constprop.1", "foo"),
    ("bar.llvm.1234567890", "bar"),
    ("tcp_retransmit_skb", "tcp_retransmit_skb"),
    ("part.0", "part.0"),            # nothing left once stripped: the name as it is
    ("do_thing.partial", "do_thing.partial"),
])
def test_source_function_name(symbol, name):
    assert source_function_name(symbol) == name


def test_frames_of_compiler_clones_are_their_functions():
    table = Kallsyms.parse(KALLSYMS)
    assert frame_name(table, 0xffffffff81a00010) == "__tcp_retransmit_skb"
    assert frame_name(table, 0xffffffff81a01010) == "tcp_retransmit_skb"
    assert frame_name(table, 0xffffffff81a03010) == "nft_do_chain [nf_tables]"
