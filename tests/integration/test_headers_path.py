"""Every probe compiles and attaches through the kernel-headers path, where the node has
headers: the path netprof takes on a kernel without BTF. Run on Debian's 6.1 by
tests/kernels (its split build/ + source/ trees, with BTF present: the loader is told to
ignore it, so both paths are tested on one kernel; bookworm-6.1-headers-only also hides BTF
from the whole capture). Nodes without headers (this machine) skip: nothing to test."""
from __future__ import annotations

from dataclasses import replace

import pytest

from profiler.kernel.features import probe_kernel
from profiler.kernel.loader import BpfLoader
from profiler.probes.base import ProbeStatus
from profiler.probes.conntrack_confirm import ConntrackConfirmProbe
from profiler.probes.drops import DropProbe
from profiler.probes.listen import ListenBacklogProbe
from profiler.probes.listen_syn_path import ListenSynPathProbe
from profiler.probes.napi import NapiProbe
from profiler.probes.retransmits import RetransmitProbe
from profiler.probes.softirq import SoftirqProbe

PROBES = (RetransmitProbe, DropProbe, SoftirqProbe, NapiProbe, ListenBacklogProbe,
          ListenSynPathProbe, ConntrackConfirmProbe)


@pytest.fixture(scope="module")
def headers_loader() -> BpfLoader:
    import os

    if os.geteuid() != 0:
        pytest.skip("not root")
    info = probe_kernel()
    if info.headers is None:
        pytest.skip(f"no kernel headers for {info.release} on this node (the BTF path is the one used)")
    return BpfLoader(replace(info, btf=False))


@pytest.mark.parametrize("probe_class", PROBES, ids=lambda c: c.__name__)
def test_probe_attaches_with_kernel_headers(headers_loader, probe_class):
    assert headers_loader.mode.startswith("kernel-headers at ")
    probe = probe_class()
    try:
        result = probe.attach(headers_loader)
        statuses = result if isinstance(result, list) else [result]
        for status in statuses:
            assert isinstance(status, ProbeStatus)
            needs_kprobes = status.via.startswith("kprobe:")
            if needs_kprobes and not headers_loader.info.kprobes:
                continue
            if probe_class is ConntrackConfirmProbe and "nf_conntrack not loaded" in (status.error or ""):
                continue
            assert status.attached, (status.name, status.error)
    finally:
        probe.detach()
