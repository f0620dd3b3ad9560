"""Fake pods: network namespaces wired to a bridge in a private "node" namespace.

    nplabXXXXXX-node                     nplabXXXXXX-<pod>
    ┌──────────────────────────┐        ┌──────────────────────┐
    │ labbr0 198.18.0.1/24     │        │ lo                   │
    │   ├── v2-web  ◄──veth────┼────────┼► eth0 198.18.0.2/24  │
    │   └── v3-db   ◄──veth──  │        └──────────────────────┘
    └──────────────────────────┘

The bridge lives in its own namespace, not in the host's, so the lab never adds an interface,
address or route to the real node, and nothing routes out: no namespace has a default
route, and 198.18.0.0/24 (RFC 2544 benchmarking space) is only reachable on the bridge.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from profiler.lab import LAB_NAME_MARK, LabError, run_checked
from profiler.lab import sysctl

NETNS_DIR = Path("/run/netns")
SUBNET_PREFIX = "198.18.0."
PREFIX_LEN = 24
NODE_IP = f"{SUBNET_PREFIX}1"
BRIDGE_NAME = "labbr0"
NODE_NAME = "node"              # reserved: the node namespace's suffix
MAX_PODS = 253                  # .2 … .254

_POD_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$")
_NETNS_RE = re.compile(rf"^({LAB_NAME_MARK}[0-9a-z]{{1,16}})-(.+)$")


@dataclass(frozen=True)
class FakePod:
    name: str          # short name, e.g. "lossy"
    netns: str         # netns name under /run/netns, e.g. "nplab3fa9c1-lossy"
    ip: str            # "198.18.0.3"
    host_veth: str     # the veth peer's name in the node namespace (a bridge port)

    @property
    def netns_inode(self) -> int:
        # The inode of the bind mount is the namespace's inode number (ns.inum), the key
        # the BPF programs see through sk->__sk_common.skc_net->ns.inum.
        return os.stat(NETNS_DIR / self.netns).st_ino


@dataclass(frozen=True)
class LabInfo:
    """What `lab list` shows: a lab found on the node, possibly left over by a crash."""
    prefix: str
    netns: tuple[str, ...]             # namespaces that exist now
    pods: dict[str, FakePod]           # from the state file (empty when it is gone)
    sysctls_pending: int               # recorded changes not yet restored
    owner_pid: int | None              # process that brought it up; None: left up on purpose
    owner_alive: bool


def new_prefix() -> str:
    return f"{LAB_NAME_MARK}{secrets.token_hex(3)}"


def list_lab_netns(prefix: str | None = None) -> list[str]:
    """Existing namespaces made by a lab (any lab, or the one with `prefix`)."""
    if not NETNS_DIR.is_dir():
        return []
    names = []
    for entry in NETNS_DIR.iterdir():
        match = _NETNS_RE.match(entry.name)
        if match and (prefix is None or match.group(1) == prefix):
            names.append(entry.name)
    return sorted(names)


def _ip(*args: str) -> None:
    run_checked(["ip", *args])


def _netns_pids(netns: str) -> list[int]:
    try:
        out = run_checked(["ip", "netns", "pids", netns]).stdout
    except LabError:
        if not (NETNS_DIR / netns).exists():
            return []
        raise
    return [int(tok) for tok in out.split() if tok.isdigit()]


def _is_running(pid: int) -> bool:
    # A zombie (our own child not yet reaped) still has /proc/<pid> but holds no namespace:
    # count it as gone, otherwise every kill would wait out its full grace period.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


def kill_netns_processes(netns: str, grace_s: float = 1.0) -> list[int]:
    """SIGTERM every process inside `netns`, SIGKILL those still there after `grace_s`.

    Needed before `ip netns del`: that only removes the name, and a process still inside
    keeps the namespace (and its interfaces and sockets) alive, invisible to `ip netns list`.
    """
    me = os.getpid()
    found = [pid for pid in _netns_pids(netns) if pid != me]
    pids = found
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = []
        for pid in pids:
            try:
                os.kill(pid, sig)
                alive.append(pid)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + grace_s
        while alive and time.monotonic() < deadline:
            alive = [pid for pid in alive if _is_running(pid)]
            if alive:
                time.sleep(0.02)
        pids = alive
        if not pids:
            break
    if pids:
        raise LabError(f"processes {pids} in netns {netns} survived SIGKILL")
    return found


def _delete_netns(netns: str) -> bool:
    if not (NETNS_DIR / netns).exists():
        return False
    kill_netns_processes(netns)
    _ip("netns", "del", netns)
    return True


def _teardown(prefix: str, netns_names: Sequence[str]) -> tuple[list[str], list[str]]:
    """Restore sysctls, then kill and delete namespaces, then drop the state file.

    Every step is tried even when an earlier one failed, so one stuck piece never strands
    the rest; the errors come back for the caller to raise. Sysctls go first because a
    change recorded inside a lab namespace can only be restored while it exists.
    """
    removed: list[str] = []
    errors: list[str] = []
    try:
        sysctl.restore_sysctls(prefix)
    except LabError as exc:
        errors.append(str(exc))
    # Pods before the node: deleting a pod namespace takes its veth pair with it, so the
    # bridge ports disappear cleanly before the bridge does.
    ordered = sorted(netns_names, key=lambda name: name == f"{prefix}-{NODE_NAME}")
    for netns in ordered:
        try:
            if _delete_netns(netns):
                removed.append(netns)
        except LabError as exc:
            errors.append(str(exc))
    leftover_sysctls = []
    try:
        leftover_sysctls = sysctl.recorded_sysctls(prefix)
    except LabError as exc:
        errors.append(str(exc))
    if not errors and not leftover_sysctls:
        removed.extend(sysctl.remove_state(prefix))
    return removed, errors


class Lab:
    """A set of fake pods; use `Lab.up([...])` as a context manager so it always comes down."""

    def __init__(self, prefix: str, pods: dict[str, FakePod]) -> None:
        self.prefix = sysctl.check_prefix(prefix)
        self.node_netns = f"{prefix}-{NODE_NAME}"
        self.pods = pods
        self._children: list[subprocess.Popen[Any]] = []

    # -- lifecycle -------------------------------------------------------------------

    @classmethod
    def up(cls, pod_names: Sequence[str], prefix: str | None = None) -> Lab:
        names = list(pod_names)
        _check_pod_names(names)
        if os.geteuid() != 0:
            raise LabError("the lab needs root (it creates network namespaces); run with sudo")
        if prefix is None:
            prefix = new_prefix()
            while list_lab_netns(prefix) or sysctl.state_path(prefix).exists():
                prefix = new_prefix()
        else:
            sysctl.check_prefix(prefix)
            if list_lab_netns(prefix) or sysctl.state_path(prefix).exists():
                raise LabError(f"lab {prefix} already exists; `netprof lab down --prefix {prefix}` first")

        pods = {
            name: FakePod(
                name=name,
                netns=f"{prefix}-{name}",
                ip=f"{SUBNET_PREFIX}{index + 2}",
                # Bridge ports live in the private node namespace, so they only need to be
                # unique there; the octet keeps them unique, the name keeps them readable
                # (IFNAMSIZ allows 15 characters).
                host_veth=f"v{index + 2}-{name}"[:15],
            )
            for index, name in enumerate(names)
        }
        lab = cls(prefix, pods)
        try:
            # The state file goes first: if this process dies halfway, `down_all()` still
            # finds the lab by its file as well as by its namespace names.
            sysctl.update_state(prefix, lab._record_topology)
            lab._build()
        except BaseException as exc:
            with sigint_deferred():
                _, errors = _teardown(prefix, list_lab_netns(prefix))
            if isinstance(exc, LabError):
                suffix = f" (cleanup also failed: {'; '.join(errors)})" if errors else ""
                raise LabError(f"lab up failed: {exc}{suffix}") from exc
            raise
        return lab

    def _record_topology(self, state: dict[str, Any]) -> None:
        state["owner_pid"] = os.getpid()
        state["node_netns"] = self.node_netns
        state["pods"] = {
            pod.name: {"netns": pod.netns, "ip": pod.ip, "host_veth": pod.host_veth}
            for pod in self.pods.values()
        }

    def _build(self) -> None:
        node = self.node_netns
        _ip("netns", "add", node)
        _quiet_netns(node)
        _ip("-n", node, "link", "set", "lo", "up")
        _ip("-n", node, "link", "add", BRIDGE_NAME, "type", "bridge")
        _ip("-n", node, "addr", "add", f"{NODE_IP}/{PREFIX_LEN}", "dev", BRIDGE_NAME)
        _ip("-n", node, "link", "set", BRIDGE_NAME, "up")
        for pod in self.pods.values():
            _ip("netns", "add", pod.netns)
            _quiet_netns(pod.netns)
            _ip("-n", pod.netns, "link", "set", "lo", "up")
            # Created straight into the two target namespaces: the pair never exists in the
            # host's namespace, so it cannot collide with host interfaces or other labs.
            _ip("link", "add", pod.host_veth, "netns", node, "type", "veth",
                "peer", "name", "eth0", "netns", pod.netns)
            _ip("-n", node, "link", "set", pod.host_veth, "master", BRIDGE_NAME)
            _ip("-n", node, "link", "set", pod.host_veth, "up")
            _ip("-n", pod.netns, "addr", "add", f"{pod.ip}/{PREFIX_LEN}", "dev", "eth0")
            _ip("-n", pod.netns, "link", "set", "eth0", "up")

    def detach(self) -> None:
        """Mark the lab as meant to outlive this process (`netprof lab up`), not a leftover."""
        def clear_owner(state: dict[str, Any]) -> None:
            state["owner_pid"] = None
        sysctl.update_state(self.prefix, clear_owner)

    @classmethod
    def attach(cls, prefix: str) -> Lab:
        """The Lab object of a lab brought up by another process (e.g. `netprof lab up`)."""
        state = sysctl.load_state(prefix)
        if not state or "pods" not in state:
            raise LabError(f"no lab {prefix} (no state file {sysctl.state_path(prefix)})")
        pods = {name: FakePod(name=name, **fields) for name, fields in state["pods"].items()}
        return cls(prefix, pods)

    def down(self) -> None:
        """Remove everything this lab made and restore its sysctls; safe to call twice."""
        with sigint_deferred():
            for child in self._children:
                _stop_child(child)
            self._children.clear()
            _, errors = _teardown(self.prefix, list_lab_netns(self.prefix))
        if errors:
            raise LabError(f"lab {self.prefix} down incomplete: {'; '.join(errors)}")

    def __enter__(self) -> Lab:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.down()

    # -- running things inside pods ---------------------------------------------------

    def netns_of(self, pod: str) -> str:
        """Namespace name of a pod; "node" names the node (bridge) namespace."""
        if pod == NODE_NAME:
            return self.node_netns
        try:
            return self.pods[pod].netns
        except KeyError:
            raise LabError(f"lab {self.prefix} has no pod {pod!r} (pods: {', '.join(self.pods)})") from None

    def exec_argv(self, pod: str, argv: list[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns_of(pod), *argv]

    def popen(self, pod: str, argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start `argv` inside the pod; `down()` stops it if still running.

        `ip netns exec` execs the command in place, so the Popen's pid is the workload's own
        pid and terminate() reaches it directly.
        """
        child = subprocess.Popen(self.exec_argv(pod, argv), **kw)
        self._children.append(child)
        return child

    def run(self, pod: str, argv: list[str], check: bool = True, **kw: Any) -> subprocess.CompletedProcess[Any]:
        """Run `argv` inside the pod to completion; output captured as text unless redirected."""
        if "stdout" not in kw and "stderr" not in kw:
            kw.setdefault("capture_output", True)
        kw.setdefault("text", True)
        full = self.exec_argv(pod, argv)
        proc = subprocess.run(full, check=False, **kw)
        if check and proc.returncode != 0:
            stderr = proc.stderr if isinstance(proc.stderr, str) else ""
            detail = " | ".join(line for line in stderr.strip().splitlines()) or "no stderr"
            raise LabError(f"`{' '.join(full)}` failed (exit {proc.returncode}): {detail}")
        return proc

    def snmp_counters(self, pod: str) -> dict[str, int]:
        """The pod's own /proc/net/snmp and /proc/net/netstat as {"Tcp.RetransSegs": n, ...}.

        Counters are per network namespace, so they are the kernel's ground truth for what
        one pod did; scenarios use them to check the profiler's attribution.
        """
        out = self.run(pod, ["cat", "/proc/net/snmp", "/proc/net/netstat"]).stdout
        counters: dict[str, int] = {}
        lines = out.splitlines()
        for header, values in zip(lines[::2], lines[1::2]):
            group, names = header.split(":", 1)
            _, numbers = values.split(":", 1)
            for name, number in zip(names.split(), numbers.split()):
                counters[f"{group}.{name}"] = int(number)
        return counters

    def __repr__(self) -> str:
        return f"Lab({self.prefix!r}, pods={list(self.pods)})"


@contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold off Ctrl-C while tearing down, so a second impatient Ctrl-C cannot strand a lab.

    A Ctrl-C pressed meanwhile is re-raised as KeyboardInterrupt once teardown is done.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pressed: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: pressed.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if pressed:
        raise KeyboardInterrupt


def _quiet_netns(netns: str) -> None:
    # IPv6 would make every new interface send DAD probes, router solicitations and MLD
    # reports; over the bridge these reach the other pods and get dropped there, polluting
    # the drop counters the profiler is being tested on. The namespace is ours and dies with
    # the lab, so this is not a change to record or restore.
    if not Path("/proc/sys/net/ipv6").exists():
        return
    run_checked(["ip", "netns", "exec", netns, "sysctl", "-q", "-w",
                 "net.ipv6.conf.all.disable_ipv6=1", "net.ipv6.conf.default.disable_ipv6=1"])


def _check_pod_names(names: list[str]) -> None:
    if not names:
        raise LabError("a lab needs at least one pod")
    if len(names) > MAX_PODS:
        raise LabError(f"at most {MAX_PODS} pods fit in {SUBNET_PREFIX}0/{PREFIX_LEN}")
    if len(set(names)) != len(names):
        raise LabError(f"duplicate pod names in {names}")
    for name in names:
        if name == NODE_NAME:
            raise LabError(f"pod name {NODE_NAME!r} is reserved for the node namespace")
        if not _POD_NAME_RE.match(name):
            raise LabError(f"bad pod name {name!r}: use 1-32 of [a-z0-9-], not starting or ending with '-'")


def _stop_child(child: subprocess.Popen[Any], grace_s: float = 1.0) -> None:
    if child.poll() is not None:
        return
    child.terminate()
    try:
        child.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_labs() -> list[LabInfo]:
    """Every lab on the node: found by namespace name and by state file."""
    by_prefix: dict[str, list[str]] = {}
    for netns in list_lab_netns():
        match = _NETNS_RE.match(netns)
        assert match
        by_prefix.setdefault(match.group(1), []).append(netns)
    for prefix in sysctl.list_state_prefixes():
        by_prefix.setdefault(prefix, [])
    labs = []
    for prefix, netns in sorted(by_prefix.items()):
        try:
            state = sysctl.load_state(prefix) or {}
        except LabError:
            state = {}
        pods = {name: FakePod(name=name, **fields) for name, fields in state.get("pods", {}).items()}
        owner = state.get("owner_pid")
        labs.append(LabInfo(
            prefix=prefix,
            netns=tuple(netns),
            pods=pods,
            sysctls_pending=len(state.get("sysctls", [])),
            owner_pid=owner,
            owner_alive=_pid_alive(owner),
        ))
    return labs


def down_all(prefix: str | None = None) -> list[str]:
    """Remove every lab (or the one with `prefix`), including leftovers of crashed runs.

    Works from a fresh process: labs are found by namespace name and by state file, and
    sysctls are restored from the state file. Returns the namespaces and files removed.
    """
    if prefix is not None:
        sysctl.check_prefix(prefix)
    prefixes: dict[str, list[str]] = {}
    for netns in list_lab_netns(prefix):
        match = _NETNS_RE.match(netns)
        assert match
        prefixes.setdefault(match.group(1), []).append(netns)
    for found in sysctl.list_state_prefixes():
        if prefix is None or found == prefix:
            prefixes.setdefault(found, [])
    removed: list[str] = []
    errors: list[str] = []
    with sigint_deferred():
        for lab_prefix, netns in sorted(prefixes.items()):
            lab_removed, lab_errors = _teardown(lab_prefix, netns)
            removed.extend(lab_removed)
            errors.extend(lab_errors)
    if errors:
        raise LabError(f"lab down incomplete (removed {len(removed)}): {'; '.join(errors)}")
    return removed
