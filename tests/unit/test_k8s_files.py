"""The safe reader the Kubernetes resolvers use for files other programs wrote."""
from __future__ import annotations

import os
import time
from pathlib import Path

from profiler.k8s.files import decode_json, read_capped, read_json_capped, read_pid_file


def test_reads_a_small_file_inside_root(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a/f").write_bytes(b"hello")
    assert read_capped(tmp_path, "a/f", 5) == b"hello"
    assert read_capped(tmp_path, "/a/f", 5) == b"hello"  # "/" means the root


def test_refuses_a_file_over_the_cap_without_reading_it(tmp_path):
    big = tmp_path / "config.json"
    with open(big, "wb") as f:
        f.truncate(10 * 1024**3)  # a sparse 10 GB file: reading it would take minutes
    started = time.monotonic()
    assert read_capped(tmp_path, "config.json", 4 << 20) is None
    assert time.monotonic() - started < 1.0
    (tmp_path / "six").write_bytes(b"123456")
    assert read_capped(tmp_path, "six", 5) is None


def test_links_leading_out_of_root_are_not_followed(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    secret = tmp_path / "secret"
    secret.write_text('{"annotations": {}}')
    os.symlink("../secret", root / "relative")
    os.symlink(str(secret), root / "absolute")  # re-rooted: means root/<tmp>/secret, absent
    os.symlink("../../../../../../../../../..", root / "updir")
    assert read_capped(root, "relative", 100) is None
    assert read_capped(root, "absolute", 100) is None
    assert read_capped(root, "updir/" + str(secret).lstrip("/"), 100) is None


def test_links_inside_root_are_followed(tmp_path):
    (tmp_path / "run/netns").mkdir(parents=True)
    (tmp_path / "var").mkdir()
    os.symlink("/run", tmp_path / "var/run")  # Debian's /var/run → /run, taken inside root
    (tmp_path / "run/x").write_text("ok")
    assert read_capped(tmp_path, "/var/run/x", 10) == b"ok"


def test_fifo_and_directories_are_not_files(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    started = time.monotonic()
    assert read_capped(tmp_path, "fifo", 100) is None
    assert time.monotonic() - started < 1.0
    assert read_capped(tmp_path, "dir", 100) is None
    assert read_capped(tmp_path, "missing", 100) is None
    assert read_capped(tmp_path, "nul\0byte", 100) is None


def test_proc_files_of_size_zero_are_read_to_eof():
    data = read_capped(Path("/"), "proc/self/status", 1 << 20)
    assert data is not None and b"Name:" in data


def test_hostile_json_is_unknown_not_a_crash(tmp_path):
    assert decode_json(b"[" * 200_000) is None          # RecursionError inside json
    assert decode_json(b"\xff\xfe\x00garbage") is None  # not UTF-8
    assert decode_json(b'{"a": ' + b"9" * 5000 + b"}") is None  # int digit limit
    assert decode_json(b'{"a": 1') is None
    assert decode_json(b'{"a": 1}') == {"a": 1}
    (tmp_path / "binary.json").write_bytes(os.urandom(4096))
    assert read_json_capped(tmp_path, "binary.json", 1 << 20) is None


def test_pid_files(tmp_path):
    for name, text in {"ok": "4242\n", "neg": "-1", "zero": "0", "huge": "99999999999",
                       "words": "4242; rm -rf /", "empty": "", "unicode": "４２"}.items():
        (tmp_path / name).write_text(text)
    assert read_pid_file(tmp_path, "ok") == 4242
    for name in ("neg", "zero", "huge", "words", "empty", "unicode", "missing"):
        assert read_pid_file(tmp_path, name) is None, name
    (tmp_path / "long").write_text("1" * 100)
    assert read_pid_file(tmp_path, "long") is None
