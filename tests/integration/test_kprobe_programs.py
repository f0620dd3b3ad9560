"""The kprobe programs compile against this kernel (BTF offsets or headers) and pass the
verifier, even where kprobes cannot attach (6.18 here): a broken program must not wait for
a kprobe kernel to be noticed. Attaching and counting: test_listen.py, test_conntrack.py,
run on 6.1 by tests/kernels."""
from __future__ import annotations

import pytest

BPF_PROG_TYPE_KPROBE = 2


@pytest.mark.parametrize("program, cflags, functions", [
    ("listen_syn_path", ["-DNETPROF_MAX_LISTENERS=64"], (b"syn_entry", b"syn_return", b"final_ack_entry", b"final_ack_return")),
    ("conntrack_confirm", ["-DNETPROF_MAX_NETNS=64"], (b"confirm_entry", b"confirm_return")),
])
def test_kprobe_program_loads(loader, program, cflags, functions):
    bpf = loader.compile(program, cflags)
    try:
        for name in functions:
            assert bpf.load_func(name, BPF_PROG_TYPE_KPROBE).fd >= 0
    finally:
        bpf.cleanup()
