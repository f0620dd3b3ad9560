from profiler.kernel.shim import ensure_shim, kernel_version_code, shim_files


def test_version_code():
    assert kernel_version_code("6.18.44-fc-v669") == (6 << 16) + (18 << 8) + 44
    assert kernel_version_code("5.4.300-generic") == (5 << 16) + (4 << 8) + 255
    assert kernel_version_code("6.1") == (6 << 16) + (1 << 8)


def test_shim_is_generated_not_checked_in(tmp_path):
    root = ensure_shim(tmp_path, "6.18.44-test")
    files = shim_files("6.18.44-test")
    for rel, content in files.items():
        assert (root / rel).read_text() == content
    assert "LINUX_VERSION_CODE 397868" in (root / "include/linux/version.h").read_text()
    # Idempotent: a second call reuses the tree, a new release gets its own.
    assert ensure_shim(tmp_path, "6.18.44-test") == root
    assert ensure_shim(tmp_path, "6.19.0") != root
    # No kernel struct definitions ever go into the shim.
    assert not any("struct sock" in c or "struct net " in c for c in files.values())


def test_read_only_cache_falls_back_to_a_temp_directory(tmp_path, monkeypatch):
    """A read-only home (the guest's /root under tests/kernels without an overlay) crashed
    `netprof profile` with exit 70; the shim now goes to the temp directory instead."""
    import tempfile

    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o500)
    writable = tmp_path / "tmp"
    writable.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(writable))
    real_mkdir = type(read_only).mkdir

    def refuse_under_read_only(self, *args, **kwargs):
        # root ignores mode bits: refuse as a read-only filesystem would (EROFS).
        if str(self).startswith(str(read_only)):
            raise OSError(30, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(type(read_only), "mkdir", refuse_under_read_only)
    root = ensure_shim(read_only, "6.1.0-57-amd64")
    # Somewhere private and writable instead (profiler/kernel/trusted_dir.py picks where).
    assert not str(root).startswith(str(read_only))
    assert (root / "include/linux/kconfig.h").is_file()
