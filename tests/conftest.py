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


# Node-global settings tests and scenarios change; each must be back when the session ends.
GUARDED_SYSCTLS = (
    "net/core/netdev_max_backlog",
    "net/core/netdev_budget",
    "net/core/netdev_budget_usecs",
    "net/core/somaxconn",
    "net/core/rmem_max",
    "net/netfilter/nf_conntrack_max",
    "kernel/bpf_stats_enabled",
)


def _read_guarded() -> dict[str, str]:
    values = {}
    for key in GUARDED_SYSCTLS:
        try:
            values[key] = Path("/proc/sys", key).read_text().strip()
        except OSError:
            continue
    return values


def _lab_prefixes() -> set[str]:
    """Labs that are this run's responsibility: owned by this process, or by nobody alive
    (a crashed workload). Another live process's lab is its own business."""
    from profiler.lab.topology import list_labs

    return {lab.prefix for lab in list_labs() if lab.owner_pid in (None, os.getpid()) or not lab.owner_alive}


@pytest.fixture(scope="session", autouse=True)
def node_left_as_found():
    """Fails the run if any test leaked a lab namespace or left a node sysctl changed —
    after putting things back, so one leak does not cascade into other tests or the node."""
    if os.geteuid() != 0:
        yield
        return
    from profiler.lab.topology import list_labs

    def another_process_has_a_lab() -> bool:
        return any(lab.owner_alive and lab.owner_pid != os.getpid() for lab in list_labs())

    labs_before = _lab_prefixes()
    # A value read while another process's scenario holds a node sysctl at a temporary value
    # is not the node's: "restoring" it later would undo that process's own restore.
    foreign_lab_at_start = another_process_has_a_lab()
    sysctls_before = _read_guarded()
    yield
    problems = []
    leaked = _lab_prefixes() - labs_before
    if leaked:
        from profiler.lab.topology import down_all

        for prefix in sorted(leaked):
            down_all(prefix)
        problems.append(f"labs left behind: {sorted(leaked)}")
    if foreign_lab_at_start or another_process_has_a_lab():
        # Another process's scenario may hold a node sysctl at a temporary value right now;
        # writing ours back would break it (and its own restore would then be undone).
        changed = {}
    else:
        # Modules can load mid-run (nf_conntrack): compare only what existed before.
        changed = {k: (v, _read_guarded().get(k)) for k, v in sysctls_before.items() if _read_guarded().get(k) != v}
    for key, (before, after) in changed.items():
        if after is not None:
            Path("/proc/sys", key).write_text(before)
        problems.append(f"{key.replace('/', '.')} was {before}, left at {after}")
    if problems:
        pytest.fail("the suite did not leave the node as it found it: " + "; ".join(problems), pytrace=False)
