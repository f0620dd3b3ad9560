"""bpf/listen.h and the numpy dtypes in profiler/probes/listen.py describe the same bytes."""
from __future__ import annotations

import re

import numpy as np

from profiler.kernel.loader import bpf_source_dir
from profiler.probes.listen import LISTEN_CALL, LISTEN_CALL_KEY

C_TYPES = {"u8": "u1", "u16": "<u2", "u32": "<u4", "u64": "<u8", "s32": "<i4", "s64": "<i8"}


def c_struct(header: str, name: str) -> np.dtype:
    body = re.search(rf"struct {name} \{{(.*?)\}};", header, re.S).group(1)
    fields = re.findall(r"^\s*(\w+)\s+(\w+);", body, re.M)
    # align=True lays fields out as a C compiler does (natural alignment, tail padding).
    return np.dtype([(field, C_TYPES[ctype]) for ctype, field in fields], align=True)


def test_listen_structs_match_the_numpy_dtypes():
    header = (bpf_source_dir() / "listen.h").read_text()
    for name, dtype in (("listen_call_key", LISTEN_CALL_KEY), ("listen_call", LISTEN_CALL)):
        c = c_struct(header, name)
        assert c.names == dtype.names, name
        assert c.itemsize == dtype.itemsize, name
        assert [c.fields[f][1] for f in c.names] == [dtype.fields[f][1] for f in dtype.names], name
