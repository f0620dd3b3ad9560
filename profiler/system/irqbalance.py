"""irqbalance as it runs on this node: whether it runs, and what it is told to leave alone.

irqbalance (https://github.com/Irqbalance/irqbalance) re-places IRQs every --interval seconds
(10 by default), so a hand-made affinity plan holds only for what it leaves alone:
- IRQs it bans: `--banirq=N` / `-i N` on its command line, or those its `--policyscript`
  (`-l`) answers `ban=true` for (the script is called with the device's sysfs path and the IRQ);
- CPUs it bans: IRQBALANCE_BANNED_CPULIST (a CPU list, irqbalance >= 1.8) or
  IRQBALANCE_BANNED_CPUS (a hex mask, older) in its environment, and the kernel's isolated
  and nohz_full CPUs, which it bans by itself. It places no IRQ on a banned CPU.
Debian and Ubuntu pass IRQBALANCE_ARGS and the ban lists through /etc/default/irqbalance;
RHEL and SUSE through /etc/sysconfig/irqbalance.

Everything is read through a root (default `/`) like the rest of profiler.system: the process
from /proc/<pid>/{comm,cmdline,environ} (environ needs root), the kernel's lists from /sys.
"""
from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

from ..kernel.root_files import read_regular_text, read_text_in_root, resolve_in_root
from .cpus import parse_cpu_list, parse_cpu_mask

DEFAULT_INTERVAL_S = 10
CONFIG_FILES = ("etc/default/irqbalance", "etc/sysconfig/irqbalance")
_DECIMAL = re.compile(r"^[0-9]+$")
_ASSIGNMENT = re.compile(r"^\s*(?:export\s+)?(IRQBALANCE_[A-Z_]+)=(.*)$")


@dataclass(frozen=True)
class IrqbalanceState:
    running: bool
    pid: int | None = None
    banned_irqs: frozenset[int] = frozenset()     # --banirq / -i
    policyscript: str | None = None               # --policyscript / -l
    interval_s: int = DEFAULT_INTERVAL_S          # --interval / -t
    oneshot: bool = False                         # --oneshot: places once at start, then exits
    banned_cpus: frozenset[int] = frozenset()     # IRQBALANCE_BANNED_CPULIST / _CPUS
    kernel_banned_cpus: frozenset[int] = frozenset()  # isolated and nohz_full: banned by itself
    settings_from: str = ""                       # "process <pid>" or the config file read
    notes: tuple[str, ...] = field(default_factory=tuple)  # what could not be read, and why

    @property
    def all_banned_cpus(self) -> frozenset[int]:
        return self.banned_cpus | self.kernel_banned_cpus

    def leaves_alone(self, irq: int) -> bool:
        """Whether irqbalance is known to leave this IRQ where it is (a policyscript may ban
        more; what it answers is not known without running it)."""
        return irq in self.banned_irqs


def parse_cmdline(argv: list[str]) -> dict:
    """The options of an irqbalance command line that decide what it moves."""
    found: dict = {"banned_irqs": set(), "policyscript": None, "interval_s": DEFAULT_INTERVAL_S, "oneshot": False}
    position = 1
    while position < len(argv):
        arg = argv[position]
        name, eq, value = arg.partition("=")
        takes_value = {"--banirq": "banirq", "-i": "banirq", "--policyscript": "policyscript", "-l": "policyscript",
                       "--interval": "interval", "-t": "interval"}
        key = takes_value.get(name if eq and name.startswith("--") else arg)
        if key is None and len(arg) > 2 and arg[:2] in ("-i", "-l", "-t") and not arg.startswith("--"):
            key, value, eq = takes_value[arg[:2]], arg[2:], "="   # -i42, -t5
        if key is not None and not eq:
            position += 1
            value = argv[position] if position < len(argv) else ""
        if key == "banirq" and _DECIMAL.match(value):
            found["banned_irqs"].add(int(value))
        elif key == "policyscript" and value:
            found["policyscript"] = value
        elif key == "interval" and _DECIMAL.match(value) and int(value) > 0:
            found["interval_s"] = int(value)
        elif arg in ("--oneshot", "-o"):
            found["oneshot"] = True
        position += 1
    found["banned_irqs"] = frozenset(found["banned_irqs"])
    return found


def banned_cpus_from(variables: dict[str, str]) -> frozenset[int]:
    """IRQBALANCE_BANNED_CPULIST wins over the older IRQBALANCE_BANNED_CPUS (as in irqbalance);
    an unparsable value bans nothing (irqbalance ignores it too)."""
    for name, parser in (("IRQBALANCE_BANNED_CPULIST", parse_cpu_list), ("IRQBALANCE_BANNED_CPUS", parse_cpu_mask)):
        if variables.get(name):
            try:
                return parser(variables[name])
            except ValueError:
                return frozenset()
    return frozenset()


def parse_environ(data: str) -> dict[str, str]:
    variables = {}
    for item in data.split("\0"):
        name, eq, value = item.partition("=")
        if eq and name.startswith("IRQBALANCE_"):
            variables[name] = value
    return variables


def parse_config(text: str) -> dict[str, str]:
    """IRQBALANCE_* assignments of /etc/default/irqbalance (a shell fragment; quotes removed)."""
    variables = {}
    for line in text.splitlines():
        match = _ASSIGNMENT.match(line)
        if not match:
            continue
        try:
            words = shlex.split(match.group(2), comments=True)
        except ValueError:
            continue
        variables[match.group(1)] = " ".join(words)
    return variables


def _kernel_banned_cpus(root: Path) -> frozenset[int]:
    cpus: set[int] = set()
    for name in ("isolated", "nohz_full"):
        text = read_text_in_root(root, f"sys/devices/system/cpu/{name}")
        if text and text.strip() and text.strip() != "(null)":
            try:
                cpus |= parse_cpu_list(text)
            except ValueError:
                pass
    return frozenset(cpus)


def irqbalance_pid(root: Path = Path("/")) -> int | None:
    """The pid of a process named irqbalance (its /proc/<pid>/comm; symlinked entries skipped)."""
    proc = resolve_in_root(root, "proc")
    if proc is None:
        return None
    try:
        entries = list(os.scandir(proc))
    except OSError:
        return None
    for entry in sorted(entries, key=lambda e: e.name):
        try:
            if not _DECIMAL.match(entry.name) or not entry.is_dir(follow_symlinks=False):
                continue
        except OSError:
            continue
        comm = read_regular_text(Path(entry.path) / "comm")
        if comm is not None and comm.strip() == "irqbalance":
            return int(entry.name)
    return None


def read_irqbalance(root: Path = Path("/")) -> IrqbalanceState:
    """What irqbalance does here: from the running process when there is one (its own command
    line and environment are what it obeys), else from its configuration file (what it would
    obey once started)."""
    kernel_banned = _kernel_banned_cpus(root)
    pid = irqbalance_pid(root)
    notes: list[str] = []
    if pid is not None:
        cmdline = read_text_in_root(root, f"proc/{pid}/cmdline") or ""
        options = parse_cmdline([arg for arg in cmdline.split("\0") if arg])
        environ = read_text_in_root(root, f"proc/{pid}/environ")
        if environ is None:
            notes.append(f"irqbalance's environment (/proc/{pid}/environ) could not be read (needs root): "
                         "its banned CPUs are unknown")
        return IrqbalanceState(True, pid, options["banned_irqs"], options["policyscript"], options["interval_s"],
                               options["oneshot"], banned_cpus_from(parse_environ(environ or "")),
                               kernel_banned, f"process {pid}", tuple(notes))
    for config in CONFIG_FILES:
        text = read_text_in_root(root, config)
        if text is None:
            continue
        variables = parse_config(text)
        options = parse_cmdline(["irqbalance", *shlex.split(variables.get("IRQBALANCE_ARGS", ""))])
        return IrqbalanceState(False, None, options["banned_irqs"], options["policyscript"], options["interval_s"],
                               options["oneshot"] or variables.get("IRQBALANCE_ONESHOT", "") not in ("", "0"),
                               banned_cpus_from(variables), kernel_banned, "/" + config)
    return IrqbalanceState(False, kernel_banned_cpus=kernel_banned)
