"""Boot one kernel under QEMU with virtme-ng, run one command inside, bring back its status.

Software emulation only (--disable-kvm): this machine's /dev/kvm is a paravirtual KVM that
cannot run stock kernels. The guest sees the host's root copy-on-write; the checkout and
/root are overlaid (writable in the guest, unchanged on the host) and results come back
only through the --rwdir. QEMU runs under `nice -n 10` in its own process group, so a time
limit or a Ctrl-C kills the whole group and nothing is left running.
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from . import guest_net
from .matrix import GUEST_MEMORY
from .provision import BootableKernel

GUEST_SCRIPT = Path(__file__).with_name("guest.sh")
NICENESS = 10
EXIT_STATUS_FILE = "exit_status"
# 32 flows: hashed onto 4 queues (or by RPS onto 3-4 CPUs) they miss one with a chance of
# 4 x (3/4)^32 < 1e-3, where 8 flows would miss one about 40% of the time. 200 packets/s each:
# under software emulation a packet costs tens of microseconds of softirq, and 3,200/s piled
# on one CPU was too close to the softirq-imbalance threshold (10% of its time): 10.4-12.5% of
# CPU 0 in NET_RX in one guest run, no finding at all in the next. 6,400/s leaves a margin.
TRAFFIC_FLOWS = 32
TRAFFIC_PPS = 200
# guest.sh writes this first thing: the guest booted and its command is starting.
GUEST_STARTED_FILE = "guest_started"
# Booting to guest.sh takes 26-40 s under emulation (90 s seen on a loaded machine). A guest
# that has not started its command after this long is stuck in boot, before any test ran:
# it is killed and booted once more, and the result says so. A hang after the command
# started is never retried: that is the suite's to answer for.
BOOT_LIMIT_S = 300
BOOT_ATTEMPTS = 2


@dataclass(frozen=True)
class GuestRun:
    exit_status: int | None      # the command's, as the guest wrote it; None if it never did
    wall_s: float
    timed_out: bool
    console: Path
    boot_hangs: int = 0          # attempts killed for not reaching guest.sh within BOOT_LIMIT_S


GUEST_SCRIPT_COPY = "guest.sh"
# The guest kernel's own console into console.log, at warnings and worse: vng's default sends
# it to /dev/null, and a guest that panics (vng boots scripts with panic=-1 and QEMU with
# -no-reboot) then just stops, with nothing to say why (seen: trixie's guest gone mid-test,
# exit status never written). --verbose shows the console; the later loglevel wins over its 7.
KERNEL_CONSOLE = ("--verbose", "--append", "loglevel=5")
# One TCG thread for all vCPUs (matrix.py `one_tcg_thread`). QEMU's default on x86 is a
# thread per vCPU (MTTCG), and there kernel text patched on one vCPU while another runs it
# goes wrong: Debian's 6.12 oopsed on the int3 of a static-key switch (tracepoint enable,
# BPF statistics) within 200 switches with netprof's softirq programs attached, and 6.1
# hung at the first ones; with one thread the same 3,000 switches passed (docs/kernels.md).
# But one thread also runs the vCPUs one at a time, and a race that needs two CPUs at once
# (conntrack's insert clash) then never happens: 0 of 20,000 rounds. Those tests are marked
# parallel_cpus and get a boot of their own on a thread per vCPU (__main__.run_one).
TCG_ONE_THREAD = "-accel tcg,thread=single"


def vng_command(vng_bin: Path, kernel: BootableKernel, repo: Path, out: Path,
                command: str, network: guest_net.GuestNetwork | None = None,
                pytest_mark: str | None = None) -> list[str]:
    """The guest runs its own copy of guest.sh from `out`: bash reads a script as it goes,
    and the checkout is the host's live tree, so an edit during a run would be read
    half-way (seen: a command mangled mid-run). `pytest_mark`: the guest's pytest runs
    only the tests that match this -m expression."""
    spec = kernel.spec
    guest = (f"NETPROF_GUEST_HIDE_HEADERS={int(not spec.headers)} "
             f"NETPROF_GUEST_HIDE_BTF={int(not spec.btf)} "
             f"NETPROF_GUEST_PROBE_TABLE={int(spec.probe_table)} "
             f"NETPROF_GUEST_OUT={shlex.quote(str(out))} "
             f"NETPROF_GUEST_REPO={shlex.quote(str(repo))} "
             + (f"NETPROF_GUEST_TIER={shlex.quote(spec.tier)} " if spec.tier else "")
             + ("NETPROF_GUEST_USER_NET=1 " if spec.network == "user" else "")
             + (f"NETPROF_GUEST_PYTEST_MARK={shlex.quote(pytest_mark)} " if pytest_mark else "")
             + (f"NETPROF_GUEST_NET={shlex.quote(guest_net.guest_env(network.nics))} " if network else "")
             + f"bash {shlex.quote(str(out / GUEST_SCRIPT_COPY))} {shlex.quote(command)}")
    # QEMU runs inside the guest network's namespace, where its taps are.
    netns = network.exec_prefix() if network else []
    argv = ["nice", "-n", str(NICENESS), *netns, str(vng_bin / "vng"), "--disable-kvm",
            "--run", str(kernel.image), "--memory", GUEST_MEMORY, "--cpus", str(spec.guest_cpus),
            "--overlay-rwdir", "/root", "--overlay-rwdir", str(repo), "--rwdir", str(out),
            "--cwd", str(repo), *KERNEL_CONSOLE]
    if kernel.tree is not None:
        # vng links /lib/modules/<rel> to the unpacked modules, but its guest mounts a tmpfs
        # over /var/cache (where the harness keeps them): without this the guest loads no
        # module at all (no nf_conntrack, so no conntrack probes).
        argv += ["--rodir", str(kernel.tree)]
    if spec.network:
        argv += ["--network", spec.network]
    # The `=` form: the value starts with "-" and would be read as one of vng's options.
    qemu_opts = " ".join(filter(None, (TCG_ONE_THREAD if spec.one_tcg_thread else "",
                                       guest_net.qemu_opts(network.nics) if network else "")))
    if qemu_opts:
        argv.append(f"--qemu-opts={qemu_opts}")
    return argv + ["--", guest]


def boot_and_run(vng_bin: Path, kernel: BootableKernel, repo: Path, out: Path,
                 command: str, pytest_mark: str | None = None) -> GuestRun:
    out.mkdir(parents=True, exist_ok=True)
    (out / EXIT_STATUS_FILE).unlink(missing_ok=True)
    (out / GUEST_SCRIPT_COPY).write_text(GUEST_SCRIPT.read_text())
    console = out / "console.log"
    if kernel.spec.nics:
        with guest_net.GuestNetwork(kernel.spec.nics) as network:
            return _boot_retrying(vng_bin, kernel, repo, out, command, console, network, pytest_mark)
    return _boot_retrying(vng_bin, kernel, repo, out, command, console, None, pytest_mark)


def _boot_retrying(vng_bin: Path, kernel: BootableKernel, repo: Path, out: Path, command: str,
                   console: Path, network: guest_net.GuestNetwork | None,
                   pytest_mark: str | None) -> GuestRun:
    """Boot; a boot that never reached guest.sh is tried again (BOOT_ATTEMPTS in all), each
    stuck attempt's console kept as console.boot-hang-N.log (console.log is the last)."""
    started = time.monotonic()
    hangs = 0
    while True:
        (out / GUEST_STARTED_FILE).unlink(missing_ok=True)
        run = _boot(vng_bin, kernel, repo, out, command, console, network, pytest_mark)
        stuck_in_boot = run.timed_out and not (out / GUEST_STARTED_FILE).exists()
        hangs += stuck_in_boot
        if not stuck_in_boot or hangs >= BOOT_ATTEMPTS:
            return GuestRun(run.exit_status, time.monotonic() - started, run.timed_out, console, hangs)
        shutil.copyfile(console, out / f"console.boot-hang-{hangs}.log")
        print(f"kernels: {kernel.spec.name}: no guest command after {BOOT_LIMIT_S} s (stuck in boot; "
              f"console kept in console.boot-hang-{hangs}.log): booting again", file=sys.stderr)


def _traffic(network: guest_net.GuestNetwork) -> subprocess.Popen:
    """Flows from the namespace into the guest's first NIC for the guest's whole life."""
    return subprocess.Popen([*network.exec_prefix(), sys.executable, "-m", "tests.kernels.traffic",
                             "--dest", network.nics[0].guest_address, "--flows", str(TRAFFIC_FLOWS),
                             "--pps", str(TRAFFIC_PPS)],
                            cwd=str(Path(__file__).resolve().parents[2]), stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _boot(vng_bin: Path, kernel: BootableKernel, repo: Path, out: Path, command: str,
          console: Path, network: guest_net.GuestNetwork | None, pytest_mark: str | None) -> GuestRun:
    argv = vng_command(vng_bin, kernel, repo, out, command, network, pytest_mark)
    (out / "vng-command.txt").write_text(shlex.join(argv) + "\n")
    env = {**os.environ, "PATH": f"{vng_bin}:{os.environ.get('PATH', '')}"}
    started = time.monotonic()
    timed_out = False
    traffic = _traffic(network) if network and kernel.spec.traffic else None
    # vng's output goes through a pipe (design §9: a direct redirect loses the first lines).
    with open(console, "w") as log:
        try:
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        except OSError:
            if traffic is not None:
                _kill_group(traffic)
            raise
        try:
            deadline = started + kernel.spec.time_limit_s
            boot_deadline = started + min(BOOT_LIMIT_S, kernel.spec.time_limit_s)
            assert proc.stdout is not None
            os.set_blocking(proc.stdout.fileno(), False)
            guest_started = False
            while proc.poll() is None:
                _copy_available(proc.stdout, log)
                now = time.monotonic()
                if now > boot_deadline and not guest_started:
                    guest_started = (out / GUEST_STARTED_FILE).exists()
                    if not guest_started:
                        timed_out = True
                        break
                if now > deadline:
                    timed_out = True
                    break
                time.sleep(0.5)
            _copy_available(proc.stdout, log)
        finally:
            _kill_group(proc)
            if traffic is not None:
                _kill_group(traffic)
    return GuestRun(read_exit_status(out), time.monotonic() - started, timed_out, console)


def _copy_available(stream, log) -> None:
    while True:
        try:
            chunk = stream.read(65536)
        except BlockingIOError:
            return
        if not chunk:
            return
        log.write(chunk.decode(errors="replace"))
        log.flush()


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL, to vng's whole process group (QEMU included)."""
    for sig, grace_s in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            proc.wait(timeout=grace_s)
            # The leader is gone; children may linger in the group: one more pass kills them.
        except subprocess.TimeoutExpired:
            continue
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def read_exit_status(out: Path) -> int | None:
    try:
        return int((out / EXIT_STATUS_FILE).read_text().strip())
    except (OSError, ValueError):
        return None
