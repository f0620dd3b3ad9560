"""Finding a usable kernel include tree, Debian's split build/ + source/ layout included."""
from __future__ import annotations

from pathlib import Path

from profiler.kernel.features import KernelInfo, find_kernel_headers, is_split_build_tree
from profiler.kernel.loader import BpfLoader

RELEASE = "6.1.0-57-amd64"


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")


def _debian_split(root: Path) -> tuple[Path, Path]:
    """As linux-headers-6.1.0-57-amd64 + linux-headers-6.1.0-57-common install it."""
    arch = root / "usr/src/linux-headers-6.1.0-57-amd64"
    common = root / "usr/src/linux-headers-6.1.0-57-common"
    _touch(arch / "include/generated/autoconf.h")
    _touch(arch / "arch/x86/include/generated/asm/orc_hash.h")
    _touch(common / "include/linux/kconfig.h")
    modules = root / "lib/modules" / RELEASE
    modules.mkdir(parents=True)
    (modules / "build").symlink_to(arch)
    (modules / "source").symlink_to(common)
    return modules / "build", modules / "source"


def test_debian_split_tree_is_found_as_its_build_tree(tmp_path):
    build, _source = _debian_split(tmp_path)
    # Before: `source` was picked (it has kconfig.h) and autoconf.h was missed.
    assert find_kernel_headers(RELEASE, tmp_path) == build
    assert is_split_build_tree(build, RELEASE, tmp_path)


def test_a_whole_tree_in_build_is_used_as_is(tmp_path):
    build = tmp_path / "lib/modules" / RELEASE / "build"
    _touch(build / "include/generated/autoconf.h")
    _touch(build / "include/linux/kconfig.h")
    assert find_kernel_headers(RELEASE, tmp_path) == build
    assert not is_split_build_tree(build, RELEASE, tmp_path)


def test_an_unconfigured_tree_is_not_headers(tmp_path):
    _touch(tmp_path / "lib/modules" / RELEASE / "source/include/linux/kconfig.h")
    assert find_kernel_headers(RELEASE, tmp_path) is None


def test_masked_headers_dangle_and_are_not_found(tmp_path):
    build, _ = _debian_split(tmp_path)
    for tree in (tmp_path / "usr/src").iterdir():
        for child in sorted(tree.rglob("*"), reverse=True):
            child.rmdir() if child.is_dir() else child.unlink()
        tree.rmdir()
    assert find_kernel_headers(RELEASE, tmp_path) is None


def test_loader_says_which_path_it_used():
    both = KernelInfo(RELEASE, btf=True, kprobes=True, tracefs=None, headers="/lib/modules/x/build")
    headers_only = KernelInfo(RELEASE, btf=False, kprobes=True, tracefs=None, headers="/lib/modules/x/build")
    loader = BpfLoader.__new__(BpfLoader)
    loader.info = both
    assert loader.mode == "btf+shim; headers at /lib/modules/x/build not used"
    loader.info = headers_only
    assert loader.mode == "kernel-headers at /lib/modules/x/build"
