"""Everything the matrix needs on the host, installed or fetched on demand (idempotent).

QEMU, busybox (virtme-ng builds a small initramfs with it) and the kernel packages come from
Debian with apt-get; virtme-ng comes from PyPI into its own venv, so it never touches the
project's .venv. Kernels of newer Debian suites are read through a private apt index (its
own sources list, lists and cache under the harness cache) and unpacked with dpkg -x: the
host's package database never hears of them.
"""
from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from .matrix import KernelSpec

# kmod: virtme-ng runs depmod over every kernel's modules. A kernel installed from apt pulls
# it in; an unpacked one (the newer suites, bullseye) on a fresh machine does not.
HOST_PACKAGES = ("qemu-system-x86", "busybox-static", "file", "kmod")
DEFAULT_CACHE = Path(os.environ.get("NETPROF_KERNELS_CACHE", "/var/cache/netprof-kernels"))
ARCHIVE_KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
# Another apt-get on the machine (a helper, unattended upgrades) holds dpkg's lock: wait.
APT_LOCK_WAIT = ("-o", "DPkg::Lock::Timeout=600")


class ProvisionError(Exception):
    """Something the harness needs cannot be had; the message says what."""


@dataclass(frozen=True)
class BootableKernel:
    spec: KernelSpec
    release: str
    image: Path
    # An unpacked kernel's tree (modules beside its image) outside /boot and /lib/modules:
    # the guest must be given it explicitly, vng's tmpfs over /var/cache hides it otherwise.
    tree: Path | None = None


def _run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise ProvisionError(f"{' '.join(cmd[:4])}… failed: {tail[0]}")
    return result


def missing_packages(packages: tuple[str, ...] | list[str]) -> list[str]:
    missing = []
    for package in packages:
        status = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package],
                                capture_output=True, text=True)
        if "install ok installed" not in status.stdout:
            missing.append(package)
    return missing


# What the mq tier's tests run in the guest, from the host's root: ethtool (channels) and
# irqbalance (the daemon the tests start themselves, in the guest).
MQ_PACKAGES = ("ethtool", "irqbalance")
# Debian's policy-rc.d: exit 101 forbids invoke-rc.d to start a service. Installed only for
# the duration of an install that must not start a daemon on the host (irqbalance would
# start moving this machine's IRQs).
POLICY_RC_D = Path("/usr/sbin/policy-rc.d")
DENY_ALL_SERVICES = "#!/bin/sh\n# netprof kernel harness: installing, no service starts\nexit 101\n"


def ensure_packages(packages: tuple[str, ...] | list[str], start_services: bool = True,
                    policy_rc_d: Path = POLICY_RC_D) -> None:
    missing = missing_packages(packages)
    if not missing:
        return
    print(f"kernels: installing {' '.join(missing)}", file=sys.stderr)
    _run(["apt-get", *APT_LOCK_WAIT, "update", "-qq"])
    # An existing policy-rc.d is the machine's own: kept as it is.
    deny = not start_services and not policy_rc_d.exists()
    if deny:
        policy_rc_d.write_text(DENY_ALL_SERVICES)
        policy_rc_d.chmod(0o755)
    try:
        _run(["apt-get", *APT_LOCK_WAIT, "install", "-y", "-qq", "--no-install-recommends", *missing])
    finally:
        if deny:
            policy_rc_d.unlink(missing_ok=True)


def ensure_test_setup(repo: Path) -> None:
    """The project's own test setup (bootstrap.sh test-setup: its packages, the venv);
    idempotent, a second run only checks."""
    _run([str(repo / "bootstrap.sh"), "test-setup"], timeout=1800)


def ensure_vng(cache: Path = DEFAULT_CACHE) -> Path:
    """virtme-ng in its own venv; returns its bin directory."""
    venv = cache / "vng-venv"
    vng = venv / "bin" / "vng"
    if not vng.exists():
        print("kernels: installing virtme-ng into its own venv", file=sys.stderr)
        _run([sys.executable if sys.prefix == sys.base_prefix else "/usr/bin/python3",
              "-m", "venv", str(venv)])
        _run([str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", "virtme-ng"])
    return vng.parent


def apt_dependency(metapackage: str, prefix: str, apt_options: tuple[str, ...] = ()) -> str:
    """The versioned package a Debian kernel metapackage depends on (linux-image-amd64 →
    linux-image-6.1.0-57-amd64), as the given apt index sees its candidate."""
    text = _run(["apt-cache", *apt_options, "depends", metapackage]).stdout
    return parse_dependency(text, prefix)


def parse_dependency(depends_text: str, prefix: str) -> str:
    for line in depends_text.splitlines():
        match = re.match(r"\s*Depends:\s*(\S+)", line)
        if match and match.group(1).startswith(prefix):
            return match.group(1)
    raise ProvisionError(f"no dependency starting with {prefix} in apt-cache's answer")


def kernel_parts(depends_text: str, release: str) -> list[str]:
    """Packages an image package pulls in for the same release: since Debian's 7.x kernels
    the image is split into linux-binary-<rel> (vmlinuz) and linux-modules-<rel>."""
    parts = []
    for line in depends_text.splitlines():
        match = re.match(r"\s*Depends:\s*(\S+)", line)
        if match and match.group(1).startswith(("linux-binary-", "linux-modules-")) \
                and match.group(1).endswith(release) and match.group(1) not in parts:
            parts.append(match.group(1))
    return parts


def release_of_image_package(package: str) -> str:
    """linux-image-6.1.0-57-amd64 → 6.1.0-57-amd64 (the uname -r the kernel will report)."""
    if not package.startswith("linux-image-"):
        raise ProvisionError(f"{package} is not a kernel image package")
    return package.removeprefix("linux-image-")


def provide(spec: KernelSpec, cache: Path = DEFAULT_CACHE) -> BootableKernel:
    if spec.source == "apt":
        image_package = apt_dependency(spec.package, "linux-image-")
        release = release_of_image_package(image_package)
        # Headers are installed even for the no-headers entry: the guest masks them.
        ensure_packages([image_package, f"linux-headers-{release}"])
        return BootableKernel(spec, release, Path("/boot") / f"vmlinuz-{release}")
    if spec.source == "host":
        release = platform.release()
        image = Path("/boot") / f"vmlinuz-{release}"
        if not image.is_file():
            raise ProvisionError(f"this machine's kernel image is not in /boot (no {image}): "
                                 "its kernel is tested by the README's test command on the host")
        return BootableKernel(spec, release, image)
    if spec.source == "suite":
        return _provide_from_suite(spec, cache)
    raise ProvisionError(f"unknown kernel source {spec.source!r}")


def host_archive_uri(sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian archive this machine already uses (the main one, not -security), so the
    private index reads the same mirror."""
    texts = []
    for path in [sources_dir / "sources.list", *sorted((sources_dir / "sources.list.d").glob("*"))]:
        try:
            texts.append(path.read_text())
        except OSError:
            continue
    uri = archive_uri_from_sources("\n".join(texts))
    if uri is None:
        raise ProvisionError("no Debian archive found in this machine's apt sources")
    return uri


def archive_uri_from_sources(text: str) -> str | None:
    for match in re.finditer(r"^URIs:\s*(\S+)", text, re.MULTILINE):
        if "security" not in match.group(1):
            return match.group(1)
    for match in re.finditer(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.MULTILINE):
        if "security" not in match.group(1):
            return match.group(1)
    return None


def private_apt_options(root: Path) -> tuple[str, ...]:
    return ("-o", f"Dir::Etc::SourceList={root / 'sources.list'}",
            "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={root / 'lists'}",
            "-o", f"Dir::Cache={root / 'cache'}",
            "-o", "Dir::State::status=/dev/null")


def _provide_from_suite(spec: KernelSpec, cache: Path) -> BootableKernel:
    root = cache / "apt" / spec.suite
    (root / "lists" / "partial").mkdir(parents=True, exist_ok=True)
    (root / "cache" / "archives" / "partial").mkdir(parents=True, exist_ok=True)
    (root / "sources.list").write_text(
        f"deb [signed-by={ARCHIVE_KEYRING}] {host_archive_uri()} {spec.suite} main\n")
    options = private_apt_options(root)
    _run(["apt-get", *options, "update", "-qq"])
    image_package = apt_dependency("linux-image-amd64", "linux-image-", options)
    release = release_of_image_package(image_package)
    unpacked = cache / "unpacked" / release
    image = unpacked_image(unpacked, release)
    if image is None:
        debs = root / "debs"
        debs.mkdir(exist_ok=True)
        for old in debs.glob("*.deb"):
            old.unlink()
        depends = _run(["apt-cache", *options, "depends", image_package]).stdout
        packages = [image_package, *kernel_parts(depends, release)]
        _run(["apt-get", *options, "download", *packages], cwd=debs)
        unpacked.mkdir(parents=True, exist_ok=True)
        for deb in debs.glob("*.deb"):
            _run(["dpkg", "-x", str(deb), str(unpacked)])
            deb.unlink()  # ~100 MB each; the unpacked tree is what is kept
        image = unpacked_image(unpacked, release)
    if image is None:
        raise ProvisionError(f"{image_package} unpacked without a vmlinuz for {release}")
    return BootableKernel(spec, release, image, tree=unpacked)


def unpacked_image(unpacked: Path, release: str) -> Path | None:
    """Where an unpacked kernel package keeps its image: /boot up to Debian 13, beside the
    modules in /usr/lib/modules/<rel>/ since the 7.x packages."""
    for candidate in (unpacked / "boot" / f"vmlinuz-{release}",
                      unpacked / "usr/lib/modules" / release / "vmlinuz",
                      unpacked / "lib/modules" / release / "vmlinuz"):
        if candidate.is_file():
            return candidate
    return None
