"""What a Change may write, and how its values compare: the allow-list of targets (net.*
sysctls, /proc/irq/<n>/smp_affinity[_list], /sys/class/net/<if>/queues/... masks) and the
forms their values take (CPU masks and lists, counts, sysctl text)."""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from ..analysis.findings import Change, Fix
from ..system.cpus import parse_cpu_list, parse_cpu_mask

ValueForm = Literal["text", "cpu_mask", "cpu_list", "count"]


@dataclass(frozen=True)
class Target:
    """Where a Change lands: a file in procfs or sysfs, as seen from one netns."""

    area: Literal["proc", "sys"]
    relpath: str                 # inside that filesystem: "sys/net/core/somaxconn"
    netns: str | None
    form: ValueForm
    resolves_to: re.Pattern[str]  # what relpath must resolve to (no symlink out of the area)
    shown: str                   # how the operator names it

    @property
    def is_cpu_set(self) -> bool:
        return self.form in ("cpu_mask", "cpu_list")


class Refused(Exception):
    pass


class Unavailable(Exception):
    """The target's file cannot be reached (missing, outside its area, netns replaced)."""


_NAME_PART = r"[A-Za-z0-9_.:@+\-]+"
_SYSCTL_DOTTED = re.compile(r"^net(\.[A-Za-z0-9_:@+\-]+)+$")
_SYSCTL_SLASHED = re.compile(rf"^net(/{_NAME_PART})+$")
_IRQ_FILE = re.compile(r"^/proc/irq/(?P<irq>[0-9]{1,6})/(?P<file>smp_affinity_list|smp_affinity)$")
_QUEUE_FILE = re.compile(
    r"^/sys/class/net/(?P<dev>[^/\s]{1,15})/queues/"
    r"(?P<queue>(?P<dir>rx|tx)-[0-9]{1,5})/(?P<file>rps_cpus|rps_flow_cnt|xps_cpus)$")
_NETNS_PATH = re.compile(r"^(/var)?/run/netns/[^/\s]+$|^/proc/[0-9]+(/task/[0-9]+)?/ns/net$")
_MAX_VALUE_CHARS = 4096


def target_of(change: Change) -> Target:
    """The allow-listed file a Change writes, or Refused saying why it is not allowed."""
    if change.netns is not None:
        if not _NETNS_PATH.match(change.netns) or "/../" in f"{change.netns}/":
            raise Refused(f"netns {change.netns!r} is not /run/netns/<name> or /proc/<pid>/ns/net")
    if change.kind == "sysctl":
        key = change.key
        if _SYSCTL_DOTTED.match(key):
            relpath = key.replace(".", "/")
        elif _SYSCTL_SLASHED.match(key):
            # The slashed form is how a name holding a dot (eth0.100) is spelt, as sysctl(8) takes it.
            relpath = key
        else:
            raise Refused(f"sysctl {key!r} is not under net.: only network sysctls are applied")
        if any(part in (".", "..") for part in relpath.split("/")):
            raise Refused(f"sysctl {key!r} has a . or .. component")
        return Target("proc", f"sys/{relpath}", change.netns, "text",
                       re.compile(re.escape(f"sys/{relpath}")), key)
    if change.kind != "file":
        raise Refused(f"unknown change kind {change.kind!r}")
    if match := _IRQ_FILE.match(change.key):
        if change.netns is not None:
            raise Refused(f"{change.key}: IRQs belong to the node, not to a network namespace; netns must be empty")
        relpath = change.key.removeprefix("/proc/")
        form: ValueForm = "cpu_list" if match["file"] == "smp_affinity_list" else "cpu_mask"
        return Target("proc", relpath, None, form, re.compile(re.escape(relpath)), change.key)
    if match := _QUEUE_FILE.match(change.key):
        dev, queue, file = match["dev"], match["queue"], match["file"]
        if dev in (".", ".."):
            raise Refused(f"{change.key}: bad interface name")
        if (file == "xps_cpus") != (match["dir"] == "tx"):
            raise Refused(f"{change.key}: {file} belongs to {'tx' if file == 'xps_cpus' else 'rx'} queues")
        relpath = change.key.removeprefix("/sys/")
        # /sys/class/net/<dev> is a link into /sys/devices; the file must end up there, under
        # the same device name and queue, and nowhere else.
        pattern = re.compile(rf"devices/(?:[^/]+/)*net/{re.escape(dev)}/queues/{queue}/{file}")
        return Target("sys", relpath, change.netns, "count" if file == "rps_flow_cnt" else "cpu_mask",
                       pattern, change.key)
    raise Refused(
        f"{change.key!r} is not an allowed target: netprof writes only net.* sysctls, "
        "/proc/irq/<n>/smp_affinity[_list] and /sys/class/net/<if>/queues/{rx,tx}-<n>/{rps_cpus,rps_flow_cnt,xps_cpus}")


def check_value(target: Target, value: str) -> None:
    if len(value) > _MAX_VALUE_CHARS or not value.isprintable() or "\n" in value:
        raise Refused(f"value {value[:40]!r} is not a single printable line")
    if not value.strip():
        raise Refused("empty value")
    try:
        cpus = canonical(target.form, value)
    except ValueError as exc:
        raise Refused(f"value {value!r} is not a valid {target.form.replace('_', ' ')}: {exc}") from None
    if target.area == "proc" and target.is_cpu_set and not cpus:
        raise Refused("an IRQ needs at least one CPU in its affinity")


def canonical(form: ValueForm, text: str) -> Any:
    text = text.strip()
    if form == "cpu_mask":
        return parse_cpu_mask(text)
    if form == "cpu_list":
        return parse_cpu_list(text)
    if form == "count":
        if not re.fullmatch(r"[0-9]{1,10}", text):
            raise ValueError("not a decimal count")
        return int(text)
    # The kernel prints multi-value sysctls (tcp_rmem) tab-separated; a plan writes spaces.
    return " ".join(text.split())


def same_in_form(form: ValueForm, a: str, b: str) -> bool:
    try:
        return bool(canonical(form, a) == canonical(form, b))
    except ValueError:
        return False


def same_value(change: Change, a: str, b: str) -> bool:
    """Whether two readings of the file `change` writes mean the same setting.

    "00000003" and "3" are the same rps_cpus mask; "0-1" and "0,1" the same affinity list;
    "4096\\t131072" and "4096 131072" the same tcp_rmem.
    """
    try:
        form = target_of(change).form
    except Refused:
        form = "text"
    return same_in_form(form, a, b)


def node_scope_changes(fixes: Iterable[Fix]) -> tuple[Change, ...]:
    """The changes apply_changes() may make: those of node-scope fixes, in order."""
    return tuple(change for fix in fixes if fix.scope == "node" for change in fix.changes)


def describe(change: Change) -> str:
    where = f" in netns {change.netns}" if change.netns else ""
    return f"{change.key}{where}"
