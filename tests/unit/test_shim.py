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
