"""The pods' image, made without a registry: Debian's busybox-static in one layer, written as
an OCI image archive (the layout `buildah push … oci-archive:` writes) for `ctr image import`.

It is built here in Python rather than with buildah: buildah's storage (/var/lib/containers)
is shared with podman and other users of the machine, while this needs nothing but the
busybox binary. The archive is deterministic (fixed mtimes and owners), so it is cached under
a name made of its inputs' digest and rebuilt only when busybox changes.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

BUSYBOX = Path("/bin/busybox")
REPOSITORY = "localhost/netprof-test/busybox"
_BUILDER_VERSION = b"1"  # bump when the layout below changes
_DIRS = ("bin", "dev", "etc", "proc", "sys", "tmp", "var", "run")


def is_static(binary: Path) -> bool:
    """A static ELF has no PT_INTERP program header; a dynamic busybox would need a libc in
    the image."""
    data = binary.read_bytes()[:4096]
    return data[:4] == b"\x7fELF" and b"/lib64/ld-linux" not in data and b"/lib/ld-" not in data


def _layer(busybox: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in _DIRS:
            entry = tarfile.TarInfo(name)
            entry.type = tarfile.DIRTYPE
            entry.mode = 0o1777 if name == "tmp" else 0o755
            tar.addfile(entry)
        entry = tarfile.TarInfo("bin/busybox")
        entry.mode = 0o755
        entry.size = len(busybox)
        tar.addfile(entry, io.BytesIO(busybox))
        for applet in ("sh", "sleep"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type = tarfile.SYMTYPE
            link.linkname = "busybox"
            tar.addfile(link)
    return buffer.getvalue()


def _blob(blobs: dict[str, bytes], data: bytes) -> dict:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    blobs[digest] = data
    return {"digest": digest, "size": len(data)}


def image_archive(cache_dir: Path, busybox: Path = BUSYBOX) -> tuple[Path, str]:
    """(path of the OCI archive, the image reference it carries), built once per busybox."""
    binary = busybox.read_bytes()
    tag = hashlib.sha256(_BUILDER_VERSION + binary).hexdigest()[:16]
    reference = f"{REPOSITORY}:{tag}"
    archive = cache_dir / f"busybox-{tag}.oci.tar"
    if archive.is_file():
        return archive, reference
    blobs: dict[str, bytes] = {}
    layer = _layer(binary)
    layer_desc = {"mediaType": "application/vnd.oci.image.layer.v1.tar", **_blob(blobs, layer)}
    config = {
        "architecture": "amd64", "os": "linux",
        # The sandbox ("pause") runs this; app containers give their own command.
        "config": {"Cmd": ["/bin/busybox", "sleep", "86400"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(layer).hexdigest()]},
    }
    config_desc = {"mediaType": "application/vnd.oci.image.config.v1+json",
                   **_blob(blobs, json.dumps(config, sort_keys=True).encode())}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": config_desc, "layers": [layer_desc]}
    manifest_desc = {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                     **_blob(blobs, json.dumps(manifest, sort_keys=True).encode()),
                     "annotations": {"io.containerd.image.name": reference,
                                     "org.opencontainers.image.ref.name": tag}}
    index = {"schemaVersion": 2, "manifests": [manifest_desc]}
    files = {"oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
             "index.json": json.dumps(index, sort_keys=True).encode()}
    for digest, data in blobs.items():
        files[f"blobs/sha256/{digest.split(':', 1)[1]}"] = data
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = archive.with_suffix(f".{os.getpid()}.partial")
    with tarfile.open(partial, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in ("blobs", "blobs/sha256"):
            entry = tarfile.TarInfo(name)
            entry.type = tarfile.DIRTYPE
            entry.mode = 0o755
            tar.addfile(entry)
        for name, data in files.items():
            entry = tarfile.TarInfo(name)
            entry.size = len(data)
            entry.mode = 0o644
            tar.addfile(entry, io.BytesIO(data))
    partial.rename(archive)  # atomic: a concurrent run sees a whole archive or none
    return archive, reference
