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


@pytest.mark.parametrize("gap_padding", [0, 256])
def test_drops_compiles_with_the_header_paths_offset_expressions(loader, tmp_path, gap_padding):
    """On the kernel-headers path the skb offsets are __builtin_offsetof() expressions, which
    the preprocessor cannot evaluate: drops.bpf.c compiled on BTF kernels (numbers) and
    failed on 6.1 with BTF hidden ("function-like macro '__builtin_offsetof' is not
    defined"). Both layouts: head close behind network_header (one read), and far (two)."""
    header = tmp_path / "header_path_offsets.h"
    header.write_text(
        f"struct netprof_fake_skb {{ long a; unsigned short network_header; char pad[{gap_padding + 6}];"
        " unsigned char *head; };\n"
        "#undef NETPROF_SKB_HEAD_OFFSET\n"
        "#define NETPROF_SKB_HEAD_OFFSET __builtin_offsetof(struct netprof_fake_skb, head)\n"
        "#undef NETPROF_SKB_NETWORK_HEADER_OFFSET\n"
        "#define NETPROF_SKB_NETWORK_HEADER_OFFSET __builtin_offsetof(struct netprof_fake_skb, network_header)\n")
    from profiler.probes import drops

    arguments = drops.kfree_skb_arguments_of(loader)  # as DropProbe decides (5.10 has no reason)
    from_sites = not arguments.reason
    cflags = drops.program_cflags(loader.info.release, arguments,
                                  drops.SITE_REASONS if from_sites else loader.layout.drop_reasons,
                                  from_sites, flows=True)
    bpf = loader.compile("drops", [*cflags, "-include", str(header)])
    bpf.cleanup()
