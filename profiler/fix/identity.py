"""Which node, boot and kernel a plan or a journal belongs to, and whether this process may
apply fixes (root with CAP_NET_ADMIN and CAP_SYS_ADMIN)."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import NetprofError


class FixError(NetprofError):
    """The journal cannot be used (corrupt, untrusted) or cannot be written."""


@dataclass(frozen=True)
class PlanIdentity:
    """Which node, boot and kernel a plan (or a journal) belongs to.

    boot_id changes on every boot (and on kexec), so values read during another boot say
    nothing about this one. The hostname is only there to name the node in messages: a plan
    from another machine already differs in boot_id.
    """

    kernel_release: str
    boot_id: str
    hostname: str

    def to_json(self) -> dict[str, str]:
        return {"kernel_release": self.kernel_release, "boot_id": self.boot_id, "hostname": self.hostname}

    @classmethod
    def from_json(cls, data: Any) -> PlanIdentity:
        if not isinstance(data, dict) or not all(isinstance(data.get(k), str) for k in
                                                 ("kernel_release", "boot_id", "hostname")):
            raise ValueError("identity must hold kernel_release, boot_id and hostname strings")
        return cls(data["kernel_release"], data["boot_id"], data["hostname"])


def current_identity(root: Path = Path("/")) -> PlanIdentity:
    def read(name: str) -> str:
        try:
            return (Path(root) / "proc/sys/kernel" / name).read_text().strip()
        except OSError as exc:
            raise FixError(f"cannot read /proc/sys/kernel/{name}: {exc.strerror}") from exc

    return PlanIdentity(kernel_release=read("osrelease"), boot_id=read("random/boot_id"),
                        hostname=read("hostname"))


# Writing rps_cpus/xps_cpus checks CAP_NET_ADMIN in the kernel; setns(2) and mounting a
# sysfs instance need CAP_SYS_ADMIN.
_REQUIRED_CAPS = {12: "CAP_NET_ADMIN", 21: "CAP_SYS_ADMIN"}


def missing_privilege(status_text: str | None = None, euid: int | None = None) -> str | None:
    """Why this process may not apply fixes, or None. Arguments default to the live process."""
    euid = os.geteuid() if euid is None else euid
    if euid != 0:
        return (f"not root (euid {euid}): applying fixes writes kernel settings; "
                "run `netprof fix --apply` as root")
    if status_text is None:
        try:
            status_text = Path("/proc/self/status").read_text()
        except OSError:
            return None
    match = re.search(r"^CapEff:\s*([0-9a-fA-F]+)\s*$", status_text, re.MULTILINE)
    if not match:
        return None
    effective = int(match.group(1), 16)
    missing = [name for bit, name in sorted(_REQUIRED_CAPS.items()) if not effective >> bit & 1]
    if missing:
        return f"root without {', '.join(missing)}: applying fixes needs them (a dropped-capability container?)"
    return None
