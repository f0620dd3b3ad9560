"""The header-free engine against the live kernel: the shim compiles what netprof needs, the
C and numpy layouts agree, and a refused BPF load is one clear line."""
from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import textwrap

import pytest

from profiler.probes.retransmits import COUNTS, FLOW_KEY, NETNS_KEY, RetransmitProbe


def test_retransmit_layouts_match_the_c_structs(loader):
    probe = RetransmitProbe()
    status = probe.attach(loader)
    try:
        assert status.attached, status.error
        bpf = probe._bpf
        assert ctypes.sizeof(bpf[b"retransmits_by_flow"].Key) == FLOW_KEY.itemsize == 44
        assert ctypes.sizeof(bpf[b"retransmits_by_flow"].Leaf) == COUNTS.itemsize
        assert ctypes.sizeof(bpf[b"retransmits_by_netns"].Key) == NETNS_KEY.itemsize
    finally:
        probe.detach()


def test_shim_compiles_maps_histograms_stacks_and_ringbuf(loader, tmp_path):
    """Everything later probes rely on compiles and loads with the generated shim."""
    import bcc

    source = tmp_path / "all_features.bpf.c"
    source.write_text(textwrap.dedent("""
        #include "netns.h"
        BPF_PERCPU_ARRAY(per_cpu_counts, u64, 4);
        BPF_HASH(by_netns, u32, u64, 128);
        BPF_HISTOGRAM(latency_log2, int, 64);
        BPF_STACK_TRACE(stacks, 1024);
        BPF_RINGBUF_OUTPUT(events, 8);
        TRACEPOINT_PROBE(tcp, tcp_retransmit_skb) {
            u32 netns = netns_inode_of_sock(args->skaddr);
            by_netns.increment(netns);
            latency_log2.increment(bpf_log2l(bpf_ktime_get_ns()));
            int id = stacks.get_stackid(args, 0);
            int zero = 0;
            u64 *c = per_cpu_counts.lookup(&zero);
            if (c) *c += id >= 0;
            u32 *slot = events.ringbuf_reserve(sizeof(u32));
            if (slot) { *slot = netns; events.ringbuf_submit(slot, 0); }
            return 0;
        }
    """))
    os.environ["BCC_KERNEL_SOURCE"] = loader._kernel_source
    from profiler.kernel.loader import bpf_source_dir

    bpf = bcc.BPF(src_file=str(source).encode(),
                  cflags=[*loader.layout.cflags(), f"-I{bpf_source_dir()}"])
    try:
        assert bpf[b"stacks"] is not None and bpf[b"latency_log2"] is not None
    finally:
        bpf.cleanup()


@pytest.fixture
def setpriv():
    import shutil

    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    return ["setpriv", "--bounding-set=-all", "--inh-caps=-all", "--"]


def test_bpf_refused_by_the_kernel_is_one_clear_line(bpf_ready, setpriv, tmp_path):
    """Root without capabilities (a container without CAP_BPF/CAP_SYS_ADMIN) gets EPERM
    from bpf(2) after compiling fine; the loader names the missing capabilities."""
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {os.getcwd()!r})
        os.environ["NETPROF_CACHE_DIR"] = {str(tmp_path)!r}
        from profiler.errors import NetprofError
        from profiler.kernel.features import probe_kernel
        from profiler.kernel.loader import BpfLoader
        try:
            BpfLoader(probe_kernel()).compile("retransmits", ["-DNETPROF_MAX_NETNS=16", "-DNETPROF_MAX_FLOWS=16"])
        except NetprofError as exc:
            print(exc)
            sys.exit(3)
        sys.exit(0)
    """)
    result = subprocess.run([*setpriv, sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 3, (result.stdout, result.stderr[-2000:])
    message = result.stdout.strip()
    assert "\n" not in message
    assert "operation not permitted" in message and "CAP_BPF" in message


def test_cli_without_bpf_capabilities_says_so(setpriv):
    result = subprocess.run([*setpriv, sys.executable, "-m", "profiler.cli", "profile", "--duration", "1"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "netprof: BPF is not permitted: this process lacks CAP_BPF+CAP_PERFMON (or CAP_SYS_ADMIN); "
        "in a container, grant CAP_BPF and CAP_PERFMON"]
