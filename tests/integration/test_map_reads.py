"""MapReader on real maps: every way of reading gives the same arrays. Kernels without batch
lookups for per-CPU arrays (5.10) read them index by index; this kernel has batch lookups,
so that path is forced here."""
from __future__ import annotations

import numpy as np
import pytest

from profiler.kernel.maps import MapLayout, MapReader, possible_cpus

pytestmark = pytest.mark.usefixtures("bpf_ready")

PROGRAM = b"""
struct pair { u64 events; u32 last; u32 _pad; };
BPF_PERCPU_ARRAY(per_cpu, struct pair, 40);
BPF_ARRAY(plain, u64, 16);
"""
KEY = np.dtype([("slot", "<u4")])
PAIR = np.dtype([("events", "<u8"), ("last", "<u4"), ("_pad", "<u4")])


def test_index_by_index_reads_equal_the_batch_reads(loader):
    from profiler.kernel.loader import import_bcc

    import os

    bcc = import_bcc()
    # As BpfLoader.compile does (this kernel has no headers: its BTF shim stands in).
    if loader._kernel_source is not None:
        os.environ["BCC_KERNEL_SOURCE"] = loader._kernel_source
    bpf = bcc.BPF(text=PROGRAM, cflags=list(loader._base_cflags))
    try:
        per_cpu, plain = bpf[b"per_cpu"], bpf[b"plain"]
        cpus = possible_cpus()
        for index in range(40):
            row = per_cpu.Leaf(*[per_cpu.sLeaf(events=index * 1000 + cpu, last=cpu + 7) for cpu in range(cpus)])
            per_cpu[per_cpu.Key(index)] = row
        for index in range(16):
            plain[plain.Key(index)] = plain.Leaf(index * 3)
        for table, layout, limit in ((per_cpu, MapLayout(KEY, PAIR, percpu=True), 25),
                                     (plain, MapLayout(KEY, np.dtype([("count", "<u8")])), None)):
            batch = MapReader(table, layout)
            by_index = MapReader(table, layout)
            by_index._batch_supported = False   # as a kernel without batch lookups answers
            assert by_index._is_array
            for reader in (batch, by_index):
                keys, values = reader.read(limit)
                assert keys["slot"].tolist() == list(range(limit or 16))
                if layout.percpu:
                    assert values.shape == (25, cpus)
                    assert values["events"][24].tolist() == [24_000 + cpu for cpu in range(cpus)]
                    assert values["last"][3].tolist() == [cpu + 7 for cpu in range(cpus)]
                else:
                    assert values["count"].tolist() == [i * 3 for i in range(16)]
            assert all(np.array_equal(a, b) for a, b in zip(batch.read(limit), by_index.read(limit)))
    finally:
        bpf.cleanup()
