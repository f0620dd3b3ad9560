"""ConntrackSource over fixture readings: deltas per pod, levels, quiet pods, vanishing pods,
and the honest status of both probes. The real per-netns reads are in
tests/integration/test_conntrack.py."""
from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from profiler.kernel.features import KernelInfo
from profiler.snapshot import SnapshotFrame
from profiler.sources.conntrack import (
    STATS_PROBE, VIA_NETLINK, VIA_PROCFS, ConntrackSource, choose_stats_reader,
)
from profiler.system.conntrack import ConntrackStats
from tests.unit.test_netns_schedule import batch_of

KERNEL = KernelInfo(release="6.18.0", btf=True, kprobes=False, tracefs="/sys/kernel/tracing", headers=None)
BUSY, QUIET_TRACKING, QUIET_UNTRACKED, GONE = 4026532001, 4026532002, 4026532003, 4026532004


def _root(tmp_path: Path, procfs: bool = True, loaded: bool = True) -> Path:
    if loaded:
        sysctls = tmp_path / "proc/sys/net/netfilter"
        sysctls.mkdir(parents=True, exist_ok=True)
        (sysctls / "nf_conntrack_max").write_text("262144\n")
        (sysctls / "nf_conntrack_buckets").write_text("65536\n")
    if procfs:
        stat_dir = tmp_path / "proc/net/stat"
        stat_dir.mkdir(parents=True, exist_ok=True)
        (stat_dir / "nf_conntrack").write_text("entries\n")
    return tmp_path


def _stats(drop: int, insert_failed: int = 0, entries: int = 0) -> ConntrackStats:
    cpu = {"clash_resolve": 0, "invalid": 0, "insert": 0, "insert_failed": insert_failed,
           "drop": drop, "early_drop": 0, "error": 0, "search_restart": 0, "chaintoolong": 0}
    return ConntrackStats(entries=entries, per_cpu=(cpu, dict(cpu, drop=0, insert_failed=0)))


class FakeNetns:
    """Per-netns readings that change between intervals, keyed by path name."""

    def __init__(self) -> None:
        self.readings: dict[str, ConntrackStats] = {}
        self.paths: dict[int, Path] = {}
        self.netlink_calls = 0

    def netns_paths(self) -> dict[int, Path]:
        return dict(self.paths)

    def read(self, path: Path, netlink: bool) -> ConntrackStats:
        self.netlink_calls += netlink
        if path.name not in self.readings:
            raise FileNotFoundError(path)
        return self.readings[path.name]


def _collect(source: ConntrackSource) -> dict[int, dict[str, int]]:
    frame = SnapshotFrame(0.0, lambda inode: f"netns:{inode}")
    source.collect(frame)
    snapshot = frame.freeze(1.0)
    return {pod.netns: dict(pod.conntrack) for pod in snapshot.pods}


@pytest.fixture
def netns() -> FakeNetns:
    fake = FakeNetns()
    fake.paths = {BUSY: Path("busy"), QUIET_TRACKING: Path("tracking"), QUIET_UNTRACKED: Path("untracked")}
    fake.readings = {"busy": _stats(drop=10), "tracking": _stats(drop=0, entries=5),
                     "untracked": _stats(drop=0)}
    return fake


def test_deltas_land_on_the_pod_whose_counters_moved(tmp_path, netns):
    source = ConntrackSource(netns, root=_root(tmp_path), read_stats=batch_of(netns.read))
    statuses = source.attach(SimpleNamespace(info=KERNEL))
    assert statuses[0].name == STATS_PROBE and statuses[0].attached and statuses[0].via == VIA_PROCFS
    netns.readings["busy"] = _stats(drop=145, insert_failed=3, entries=64)
    pods = _collect(source)
    assert pods[BUSY]["drop"] == 135 and pods[BUSY]["insert_failed"] == 3
    assert pods[BUSY]["count_now"] == 64 and pods[BUSY]["max_now"] == 262144
    assert pods[BUSY]["buckets_now"] == 65536
    # Tracking but untroubled: present with zero counters (its level says it is in use).
    assert pods[QUIET_TRACKING]["drop"] == 0 and pods[QUIET_TRACKING]["count_now"] == 5
    # No conntrack activity at all: absent.
    assert QUIET_UNTRACKED not in pods
    # Next interval: nothing moved.
    assert _collect(source)[BUSY]["drop"] == 0


def test_a_vanished_or_new_netns_is_not_an_error(tmp_path, netns):
    source = ConntrackSource(netns, root=_root(tmp_path), read_stats=batch_of(netns.read))
    source.attach(SimpleNamespace(info=KERNEL))
    del netns.readings["busy"]                      # the pod went away mid-capture
    netns.paths[GONE] = Path("new")
    netns.readings["new"] = _stats(drop=50)         # a pod appeared: first reading = baseline
    pods = _collect(source)
    assert BUSY not in pods and GONE not in pods
    netns.readings["new"] = _stats(drop=53)
    assert _collect(source)[GONE]["drop"] == 3


def test_kernel_without_clash_resolution_has_no_such_key(tmp_path, netns):
    old = {"invalid": 0, "insert": 0, "insert_failed": 2, "drop": 2, "early_drop": 0,
           "error": 0, "search_restart": 0, "searched": 0}
    netns.readings["busy"] = ConntrackStats(entries=1, per_cpu=(old,))
    source = ConntrackSource(netns, root=_root(tmp_path), read_stats=batch_of(netns.read))
    source.attach(SimpleNamespace(info=KERNEL))
    netns.readings["busy"] = ConntrackStats(entries=1, per_cpu=(dict(old, insert_failed=9, drop=9),))
    pods = _collect(source)
    assert pods[BUSY]["insert_failed"] == 7
    assert "clash_resolve" not in pods[BUSY] and "chaintoolong" not in pods[BUSY]


def test_not_loaded_is_reported_then_read_once_it_loads(tmp_path, netns):
    root = _root(tmp_path, procfs=False, loaded=False)
    source = ConntrackSource(netns, root=root, read_stats=batch_of(netns.read))
    status = source.attach(SimpleNamespace(info=KERNEL))[0]
    assert not status.attached and "nf_conntrack is not loaded" in status.error
    assert _collect(source) == {}
    _root(tmp_path)                                 # modprobe nf_conntrack happened
    assert _collect(source) == {}                   # this interval takes the baseline
    netns.readings["busy"] = _stats(drop=12)
    assert _collect(source)[BUSY]["drop"] == 2


def test_netlink_when_procfs_statistics_are_compiled_out(tmp_path, netns):
    pytest.importorskip("pyroute2")
    root = _root(tmp_path, procfs=False, loaded=True)
    assert choose_stats_reader(root) == ("netlink", None)
    source = ConntrackSource(netns, root=root, read_stats=batch_of(netns.read))
    status = source.attach(SimpleNamespace(info=KERNEL))[0]
    assert status.attached and status.via == VIA_NETLINK
    assert netns.netlink_calls == 3


def test_confirm_kprobe_status_says_why_not(tmp_path):
    from profiler.probes.conntrack_confirm import NAME, ConntrackConfirmProbe

    probe = ConntrackConfirmProbe(tmp_path)
    status = probe.attach(SimpleNamespace(info=KERNEL))
    assert status.name == NAME and not status.attached and not probe.attached
    assert status.via == "kprobe:__nf_conntrack_confirm"
    assert status.error == "kprobes not available on this kernel (CONFIG_KPROBES off)"

    with_kprobes = KernelInfo(release="6.1.0", btf=True, kprobes=True, tracefs=None, headers=None)
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc/kallsyms").write_text("ffffffffc0a01230 t nf_ct_resolve_clash\t[nf_conntrack]\n")
    status = probe.attach(SimpleNamespace(info=with_kprobes))
    assert not status.attached
    assert status.error == "__nf_conntrack_confirm not in /proc/kallsyms (nf_conntrack not loaded)"
    # With the symbol present the probe compiles and attaches: tests/integration/test_kprobes.py.