"""Shared test policy.

Tests that need root, BPF or network namespaces skip with the reason when those are missing,
except under NETPROF_REQUIRE_BPF=1 (set by .ci/run), where a missing capability is a failure:
CI must never go green by skipping the tests that load real BPF programs.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

REQUIRE_BPF = os.environ.get("NETPROF_REQUIRE_BPF") == "1"


def skip_or_fail(reason: str) -> None:
    if REQUIRE_BPF:
        pytest.fail(f"NETPROF_REQUIRE_BPF=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def missing_for_bpf() -> str | None:
    if os.geteuid() != 0:
        return "not root: loading BPF programs needs root"
    if not Path("/sys/kernel/btf/vmlinux").is_file():
        return "no kernel BTF at /sys/kernel/btf/vmlinux"
    from profiler.kernel.features import find_tracefs

    if find_tracefs() is None:
        return "tracefs not mounted (mount -t tracefs tracefs /sys/kernel/tracing)"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "BCC's python module is missing (apt install python3-bpfcc)"
    return None


def missing_for_lab() -> str | None:
    if os.geteuid() != 0:
        return "not root: the lab creates network namespaces"
    for tool in ("ip", "nft"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    return None


@pytest.fixture
def bpf_ready() -> None:
    reason = missing_for_bpf()
    if reason:
        skip_or_fail(reason)


@pytest.fixture
def lab_ready() -> None:
    reason = missing_for_lab()
    if reason:
        skip_or_fail(reason)


@pytest.fixture
def loader(bpf_ready):
    from profiler.kernel.features import probe_kernel
    from profiler.kernel.loader import BpfLoader

    return BpfLoader(probe_kernel())
