"""bpf/listen_syn_path.h and bpf/conntrack_confirm.h describe the same bytes as the numpy
dtypes their probe modules read the maps with."""
from __future__ import annotations

import pytest

from profiler.kernel.loader import bpf_source_dir
from profiler.probes.conntrack_confirm import CONFIRM_COUNT, CONFIRM_KEY
from profiler.probes.listen_syn_path import CAUSES, SYN_DROP_COUNT, SYN_DROP_KEY
from tests.unit.test_listen_layout import c_struct


@pytest.mark.parametrize("header, structs", [
    ("listen_syn_path.h", (("syn_drop_key", SYN_DROP_KEY), ("syn_drop_count", SYN_DROP_COUNT))),
    ("conntrack_confirm.h", (("confirm_key", CONFIRM_KEY), ("confirm_count", CONFIRM_COUNT))),
])
def test_kprobe_structs_match_the_numpy_dtypes(header, structs):
    text = (bpf_source_dir() / header).read_text()
    for name, dtype in structs:
        c = c_struct(text, name)
        assert c.names == dtype.names, name
        assert c.itemsize == dtype.itemsize, name
        assert [c.fields[f][1] for f in c.names] == [dtype.fields[f][1] for f in dtype.names], name


def test_syn_drop_causes_match_the_header():
    import re

    text = (bpf_source_dir() / "listen_syn_path.h").read_text()
    defined = {int(v): n for n, v in re.findall(r"#define SYN_DROP_(\w+) (\d+)", text)}
    assert {v: n.lower() for v, n in defined.items()} == CAUSES
