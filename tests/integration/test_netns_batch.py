"""`read_in_each_netns` on real network namespaces: one thread visits each in turn, every
reader runs in its own netns, a gone namespace is an entry not an exception, and a hung
reader cannot hold the batch past its timeout."""
from __future__ import annotations

import os
import secrets
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from profiler.system.netns import NetnsBatchTimeout, read_in_each_netns, run_in_netns
from profiler.system.netstat import read_counters_here

pytestmark = pytest.mark.usefixtures("lab_ready")

NETNS_DIR = Path("/run/netns")


def thread_netns_inode() -> int:
    return os.stat("/proc/thread-self/ns/net").st_ino


@pytest.fixture
def namespaces(lab_ready):
    """Three fresh namespaces: inode → path; always deleted afterwards."""
    names = [f"netprof-t-{secrets.token_hex(4)}" for _ in range(3)]
    created = []
    try:
        for name in names:
            subprocess.run(["ip", "netns", "add", name], check=True, capture_output=True)
            created.append(name)
        yield {os.stat(NETNS_DIR / name).st_ino: NETNS_DIR / name for name in names}
    finally:
        for name in created:
            subprocess.run(["ip", "netns", "del", name], check=False, capture_output=True)


def test_each_reader_runs_in_its_own_netns_from_one_thread(namespaces):
    own = thread_netns_inode()
    seen = read_in_each_netns(namespaces, lambda: (thread_netns_inode(), threading.get_ident()))
    assert {inode: netns for inode, (netns, _) in seen.items()} == {inode: inode for inode in namespaces}
    assert len({thread for _, thread in seen.values()}) == 1, "one thread visits them all"
    assert threading.get_ident() not in {thread for _, thread in seen.values()}
    assert thread_netns_inode() == own, "the caller's thread never changed namespace"


def test_the_counters_are_each_namespaces_own(namespaces):
    path = next(iter(namespaces.values()))
    subprocess.run(["ip", "-n", path.name, "link", "set", "lo", "up"], check=True)

    def send_datagrams() -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for _ in range(5):
                sock.sendto(b"x", ("127.0.0.1", 9))

    run_in_netns(path, send_datagrams)
    counters = read_in_each_netns(namespaces, read_counters_here)
    sent = {inode for inode, values in counters.items() if values["Udp.OutDatagrams"] >= 5}
    assert sent == {os.stat(path).st_ino}


def test_a_namespace_gone_is_an_entry_and_the_others_are_still_read(namespaces, tmp_path):
    paths = dict(namespaces)
    paths[1] = tmp_path / "deleted-pod"                         # never existed (deleted)
    results = read_in_each_netns(paths, thread_netns_inode)
    assert isinstance(results[1], FileNotFoundError)
    assert {inode: results[inode] for inode in namespaces} == {inode: inode for inode in namespaces}


def test_a_failing_reader_fails_only_its_namespace(namespaces):
    first = next(iter(namespaces))

    def read() -> int:
        inode = thread_netns_inode()
        if inode == first:
            raise ValueError("unparseable")
        return inode

    results = read_in_each_netns(namespaces, read)
    assert isinstance(results[first], ValueError)
    assert all(results[inode] == inode for inode in namespaces if inode != first)


def test_a_hung_reader_is_bounded_by_the_batch_timeout(namespaces):
    first = next(iter(namespaces))
    release = threading.Event()

    def read() -> int:
        inode = thread_netns_inode()
        if inode != first:
            release.wait(60)   # hangs until the test lets it go
        return inode

    started = time.monotonic()
    try:
        results = read_in_each_netns(namespaces, read, timeout_s=0.5)
    finally:
        release.set()
    assert time.monotonic() - started < 10, "the batch returned around its timeout"
    assert results[first] == first, "what was read before the hang is kept"
    assert set(results) == set(namespaces)
    assert all(isinstance(results[inode], NetnsBatchTimeout) for inode in namespaces if inode != first)
