"""The kernel-shim cache root compiles from: only one nobody else can change, with exactly the
files netprof generates (issue 12, item 4)."""
from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from profiler.kernel import shim, trusted_dir
from profiler.kernel.shim import ensure_shim, shim_files

RELEASE = "6.18.44-trust-test"
NOBODY = 65534


@pytest.fixture
def private(tmp_path, monkeypatch) -> Path:
    """Where the shim goes when the cache is refused (instead of /var/cache/netprof)."""
    directory = tmp_path / "private"
    monkeypatch.setattr(trusted_dir, "PRIVATE_DIRS", (directory,), raising=False)
    return directory


def _assert_is_generated_tree(root: Path) -> None:
    for rel, content in shim_files(RELEASE).items():
        path = root / rel
        assert not path.is_symlink()
        assert path.read_text() == content
        assert os.lstat(path).st_uid in (0, os.geteuid())


def _build_cache(tmp_path: Path) -> tuple[Path, Path]:
    cache = tmp_path / "home/.cache/netprof"
    cache.mkdir(parents=True, mode=0o755)
    root = ensure_shim(cache, RELEASE)
    assert root.is_relative_to(cache)
    return cache, root


def _chown_tree(path: Path, uid: int) -> None:
    for directory, subdirs, names in os.walk(path):
        for name in [*subdirs, *names]:
            os.lchown(Path(directory, name), uid, uid)
    os.lchown(path, uid, uid)


def test_a_cache_owned_by_another_user_is_not_compiled_from(tmp_path, private, capsys):
    if os.geteuid() != 0:
        pytest.skip("chown to another uid needs root")
    cache, planted = _build_cache(tmp_path)
    (planted / "include/linux/kconfig.h").write_text("#define CONFIG_BPF_SYSCALL 1\n/* evil */\n")
    _chown_tree(cache, NOBODY)
    capsys.readouterr()
    root = ensure_shim(cache, RELEASE)
    assert not root.is_relative_to(cache)
    assert root.is_relative_to(private)
    _assert_is_generated_tree(root)
    err = capsys.readouterr().err
    assert f"not using the kernel-shim cache {cache}" in err and f"owned by uid {NOBODY}" in err
    # Said once per process, not at every loader.
    assert ensure_shim(cache, RELEASE) == root
    assert "not using" not in capsys.readouterr().err


def test_a_group_writable_cache_is_not_compiled_from(tmp_path, private, capsys):
    cache, planted = _build_cache(tmp_path)
    os.chmod(planted.parent, 0o775)
    root = ensure_shim(cache, RELEASE)
    assert root.is_relative_to(private)
    _assert_is_generated_tree(root)
    assert "group-writable" in capsys.readouterr().err


def test_a_world_writable_ancestor_without_sticky_bit_is_refused(tmp_path, private, capsys):
    cache, _ = _build_cache(tmp_path)
    os.chmod(tmp_path / "home", 0o777)
    assert ensure_shim(cache, RELEASE).is_relative_to(private)
    assert f"{tmp_path / 'home'} is world-writable" in capsys.readouterr().err


@pytest.mark.parametrize("tamper", ["edit", "extra-header", "symlinked-file", "missing"])
def test_a_tampered_tree_is_rebuilt_before_use(tmp_path, private, capsys, tamper):
    cache, root = _build_cache(tmp_path)
    kconfig = root / "include/linux/kconfig.h"
    if tamper == "edit":
        kconfig.write_text(kconfig.read_text() + "#define CONFIG_EVIL 1\n")
    elif tamper == "extra-header":
        (root / "include/linux/compiler.h").write_text("#error planted\n")
    elif tamper == "symlinked-file":
        target = tmp_path / "elsewhere.h"
        target.write_text(kconfig.read_text())
        kconfig.unlink()
        kconfig.symlink_to(target)
    else:
        kconfig.unlink()
    capsys.readouterr()
    again = ensure_shim(cache, RELEASE)
    assert again == root  # the trusted cache is kept; only its tree is rebuilt
    _assert_is_generated_tree(again)
    assert not (again / "include/linux/compiler.h").exists()
    assert f"rebuilding the kernel-shim tree {root}" in capsys.readouterr().err
    assert (again / shim.MANIFEST).read_text() == shim.manifest_text(shim_files(RELEASE))


def test_a_symlinked_cache_component_is_refused(tmp_path, private, capsys):
    real = tmp_path / "real-cache"
    real.mkdir()
    ensure_shim(real, RELEASE)
    link = tmp_path / "link-cache"
    link.symlink_to(real)
    root = ensure_shim(link, RELEASE)
    assert root.is_relative_to(private)
    _assert_is_generated_tree(root)
    assert f"{link} is a symlink" in capsys.readouterr().err


def test_a_read_only_home_falls_back_instead_of_crashing(tmp_path, private, capsys):
    if os.geteuid() != 0:
        pytest.skip("mounting a read-only tmpfs needs root")
    home = tmp_path / "ro-home"
    home.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k,mode=0755", "tmpfs", str(home)], check=True)
    try:
        root = ensure_shim(home / ".cache/netprof", RELEASE)
    finally:
        subprocess.run(["umount", str(home)], check=True)
    assert root.is_relative_to(private)
    _assert_is_generated_tree(root)
    assert "Read-only file system" in capsys.readouterr().err


def test_no_trusted_place_at_all_is_one_netprof_error(tmp_path, monkeypatch):
    from profiler.errors import NetprofError

    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    monkeypatch.setattr(trusted_dir, "PRIVATE_DIRS", (open_dir / "private",))
    monkeypatch.setattr(trusted_dir.tempfile, "gettempdir", lambda: str(open_dir))
    monkeypatch.setattr(trusted_dir, "_TEMP_FALLBACKS", (), raising=False)
    with pytest.raises(NetprofError) as caught:
        ensure_shim(open_dir / "cache", RELEASE)
    message = str(caught.value)
    assert "\n" not in message and "world-writable" in message


def test_an_emptydir_style_cache_of_our_own_is_tightened_and_used(tmp_path, private, capsys):
    """Kubernetes makes every emptyDir 0777; the DaemonSet's NETPROF_CACHE_DIR is one."""
    cache = tmp_path / "emptydir"
    cache.mkdir()
    os.chmod(cache, 0o777)
    root = ensure_shim(cache, RELEASE)
    assert root.is_relative_to(cache)
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o755
    _assert_is_generated_tree(root)
    assert f"made {cache} writable by its owner only (it was 0777)" in capsys.readouterr().err


def test_a_sticky_shared_folder_is_never_changed_and_a_squatted_entry_is_refused(tmp_path, private):
    """Like /tmp: others cannot rename what root made in it, but may have made entries first."""
    shared = tmp_path / "shared-tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)
    root = ensure_shim(shared, RELEASE)
    assert root.is_relative_to(shared)
    assert stat.S_IMODE(os.stat(shared).st_mode) == 0o1777
    if os.geteuid() != 0:
        return
    squatted = tmp_path / "squatted-tmp"
    squatted.mkdir()
    os.chmod(squatted, 0o1777)
    (squatted / "kernel-shim").mkdir()
    os.chown(squatted / "kernel-shim", NOBODY, NOBODY)
    assert ensure_shim(squatted, RELEASE).is_relative_to(private)
