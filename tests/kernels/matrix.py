"""The declared kernel matrix: which kernels netprof is tested on, and how each is obtained.

Three ways to get a kernel, none of which boots the host into it:
  apt    a kernel package of this machine's own Debian release, installed with apt-get
         (its image lands in /boot, its modules in /lib/modules, visible to the guest)
  host   the image of the kernel this machine runs, if /boot holds it
  suite  the newest kernel of a newer Debian suite, read through a private apt index and
         unpacked with dpkg -x into the harness cache (never installed on the host)
Headers and BTF can be hidden inside the guest (tmpfs over /usr/src, over /sys/kernel/btf)
so one installed kernel also stands for a node that ships less.
"""
from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class KernelSpec:
    name: str                  # what docs/kernels.md and --kernel call it
    source: str                # "apt", "host" or "suite"
    package: str = ""          # apt: the metapackage to resolve (e.g. linux-image-amd64)
    suite: str = ""            # suite: the Debian suite whose newest kernel is fetched
    headers: bool = True       # False: /usr/src is masked in the guest (no build/ or source/)
    btf: bool = True           # False: /sys/kernel/btf is masked (netprof must use headers)
    # Boot + command; the guest is killed past it. The full integration tier took 35-50 min
    # on 6.1 on this 2-CPU machine shared with other work (-v: a killed run's console
    # still names each test's outcome; junit comes only at the end).
    time_limit_s: int = 4800
    command: str | None = None  # run instead of the integration tests (see __main__.py)
    # vng --network: "loop" gives the guest two virtio NICs joined by a QEMU hub (real NIC
    # IRQs and NAPI in /proc/interrupts, no traffic leaves QEMU); "user": QEMU's user-mode
    # NAT to the host's network (the Vagrant guest reaches Debian's mirrors and PyPI through
    # it, as a VM would); None: loopback only.
    network: str | None = "loop"
    note: str = ""
    cpus: int = 0              # vCPUs; 0: GUEST_CPUS
    nics: tuple[str, ...] = ()  # NIC models (guest_net.NIC_MODELS) on taps in a private netns
    traffic: bool = False      # flows from that netns into the first NIC (traffic.py)
    tier: str = ""             # NETPROF_GUEST_TIER in the guest: which tests/kernels/<tier> run
    # What `--ci` runs on this entry (the short guest tier .ci/run can afford); None: not in CI.
    ci_command: str | None = None
    # The limit under `--ci` (the CI command is shorter than the entry's own); 0: time_limit_s.
    ci_time_limit_s: int = 0
    # QEMU's TCG on one thread for all vCPUs (vm.TCG_ONE_THREAD). With a thread per vCPU
    # (MTTCG), kernel text patched on one vCPU while another runs it goes wrong: 6.12 oopsed,
    # 6.1 hung (docs/kernels.md). One thread runs the vCPUs one at a time, so the tests that
    # need two CPUs at once (marked `parallel_cpus`) run in a second boot with a thread per
    # vCPU (`parallel_cpus_phase`). False: the whole command on a thread per vCPU.
    one_tcg_thread: bool = True
    # False: no `netprof profile` probe table at boot (the NIC tiers boot bookworm-6.1 again,
    # whose table the bookworm-6.1 entry records; under emulation it costs 60-90 s).
    probe_table: bool = True

    @property
    def guest_cpus(self) -> int:
        return self.cpus or GUEST_CPUS


# Guest size is fixed so results compare across kernels and runs.
GUEST_CPUS = 2
GUEST_MEMORY = "2G"



def pytest_command(*paths: str) -> str:
    """The guest's pytest run over `paths`, its junit written where the harness collects it."""
    return (".venv/bin/python -m pytest -v -ra -p no:cacheprovider "
            "--junitxml \"$NETPROF_GUEST_OUT/junit.xml\" " + " ".join(paths))


HEADERS_PATH_TESTS = pytest_command("tests/integration/test_headers_path.py")

# The subset of the integration tier that touches every probe at least once (each file's
# module docstring says which): what CI can afford on 2 CPUs under software emulation.
# `make kernels-ci` runs it on bookworm-6.1; see docs/kernels.md for the measured times.
CI_SUBSET_FILES = (
    "tests/integration/test_kprobe_programs.py",   # both kprobe programs through the verifier
    "tests/integration/test_listen.py",            # listen_backlog, listen_queues, netns_counters, listen_syn_path
    "tests/integration/test_conntrack.py",         # conntrack_stats, conntrack_confirm
    "tests/integration/test_drops.py",             # skb_drops, rcvqueue_full, drop stacks
    "tests/integration/test_retransmits.py",       # tcp_retransmits, retransmit stacks
    "tests/integration/test_softirq.py",           # softirq, napi, softnet
    "tests/integration/test_napi_devices.py",      # napi: a named device's polls in its pod's netns
)
CI_SUBSET_TESTS = pytest_command(*CI_SUBSET_FILES)

# 5.10 under emulation runs about a test a minute alone, two beside another guest: the whole
# tier would take 3 hours and more. Its entry runs every probe's files, the drop reasons read
# from call sites (only 5.10 needs them), the per-CPU array reads 5.10 has no batch for, and
# the hostile tracefs (BTF, not the format file, says what its kfree_skb passes).
BULLSEYE_FILES = (
    *CI_SUBSET_FILES,
    "tests/integration/test_drop_sites.py",
    "tests/integration/test_map_reads.py",
    "tests/integration/test_hostile_tracefs.py",
)
BULLSEYE_TESTS = pytest_command(*BULLSEYE_FILES)


def _tier_tests(*paths: str) -> str:
    return pytest_command(*(f"tests/kernels/{p}" for p in paths))


# Guests with real NICs (issue 19): the multi-queue tier measures IRQ affinity and RPS/XPS
# with the kernel's own counters; the NIC tier reads other drivers' /proc/interrupts lines.
MQ_TESTS = _tier_tests("mq")
NICS_TESTS = _tier_tests("nics")
# CI's share of the multi-queue tier: the finding for IRQs piled on one CPU, the spread by
# `fix --apply` measured in /proc/interrupts, and the rollback (one capture); the rest of the
# tier (RPS, irqbalance, `--verify`'s A-B-A: 5 more captures) stays in `make kernels`.
CI_MQ_FILES = ("mq/test_irq_affinity.py",)
CI_MQ_TESTS = _tier_tests(*CI_MQ_FILES)

# The Vagrant box's provisioning, run for real (issue 14 item 6): vagrant/provision/netprof.sh
# as `vagrant up` runs it, then the demo's programs under the netprof it installed
# (tests/kernels/vagrant, docs/vagrant.md).
VAGRANT_TESTS = _tier_tests("vagrant")

MATRIX: tuple[KernelSpec, ...] = (
    # CI limits: 4-6x the longest whole run measured (6.1 383 s, mq 155 s, nics 55 s), so a
    # hang costs CI minutes, not the 45 of the full tiers' limits.
    KernelSpec("bookworm-6.1", "apt", package="linux-image-amd64", ci_command=CI_SUBSET_TESTS,
               ci_time_limit_s=1800,
               note="Debian 12's LTS kernel with its headers (split build/ and source/ trees)"),
    KernelSpec("bookworm-6.1-noheaders", "apt", package="linux-image-amd64", headers=False,
               note="the same kernel with /usr/src masked: BTF only, like Talos or COS"),
    KernelSpec("bookworm-6.1-headers-only", "apt", package="linux-image-amd64", btf=False,
               # Without BTF the suite's fixtures refuse (they require it, as netprof's
               # normal path); what this entry tests is the headers path: every probe
               # attached through it, and the probe table of a capture compiled with it.
               command=HEADERS_PATH_TESTS,
               note="the same kernel with /sys/kernel/btf masked: the kernel-headers path"),
    KernelSpec("bookworm-6.1-mq", "apt", package="linux-image-amd64", cpus=4,
               nics=("virtio-mq4",), network=None, traffic=True, tier="mq", command=MQ_TESTS, time_limit_s=2700,
               ci_command=CI_MQ_TESTS, ci_time_limit_s=900, probe_table=False,
               note="4 vCPUs, a 4-queue virtio-net NIC (one MSI-X vector per queue): IRQ affinity, RPS/XPS, irqbalance"),
    KernelSpec("bookworm-6.1-nics", "apt", package="linux-image-amd64", nics=("e1000e", "vmxnet3"),
               network=None, tier="nics", command=NICS_TESTS, time_limit_s=900,
               ci_command=NICS_TESTS, probe_table=False,
               note="e1000e and vmxnet3 NICs: their queue IRQ names as the drivers print them"),
    KernelSpec("bookworm-6.1-vagrant", "apt", package="linux-image-amd64", network="user",
               tier="vagrant", command=VAGRANT_TESTS,
               time_limit_s=2400, probe_table=False,
               note="the Vagrant box's provision script as `vagrant up` runs it (repo rsynced to /opt/netprof, "
                    "apt and PyPI through QEMU's NAT), then the demo's programs under that netprof"),
    KernelSpec("host", "host",
               note="the kernel this machine runs, when /boot holds its image"),
    # Issue 14 asks for 5.10 where a reachable suite still carries it: Debian 11's does
    # (5.10.223 on 2026-12-07). No drop reasons (5.17), no rx_sk, older BTF.
    KernelSpec("bullseye", "suite", suite="bullseye", command=BULLSEYE_TESTS, time_limit_s=5400,
               note="Debian 11's kernel (5.10), unpacked, not installed: a declared selection (BULLSEYE_FILES)"),
    KernelSpec("trixie", "suite", suite="trixie",
               note="Debian 13's kernel, unpacked, not installed"),
    KernelSpec("forky", "suite", suite="forky",
               note="Debian testing's kernel, unpacked, not installed"),
)


# The pytest marker (pyproject.toml) of a test that needs two CPUs running at once: a race
# between threads (conntrack's insert clash: 0 clashes in 20,000 rounds on one TCG thread).
PARALLEL_CPUS_MARK = "parallel_cpus"
# Only the integration tier has such tests (tests/unit/test_kernel_harness.py checks it).
PARALLEL_CPUS_TESTS_UNDER = "tests/integration"


def parallel_cpus_phase(spec: KernelSpec, command: str, repo: Path) -> bool:
    """True when `command` runs in two boots: everything but the `parallel_cpus` tests on one
    TCG thread, then those tests alone on a thread per vCPU. Only for a pytest command that
    names the integration tier or one of its files that marks a test (a boot costs 30-90 s),
    and chooses no markers of its own: the phases' `-m` comes first in PYTEST_ADDOPTS, so a
    command's own `-m` would win and each boot would run the whole selection again."""
    if not spec.one_tcg_thread or "pytest" not in command:
        return False
    words = shlex.split(command)
    pytest_args = words[words.index("pytest") + 1:] if "pytest" in words else words
    if any(word == "-m" or word.startswith("-m") and len(word) > 2 for word in pytest_args):
        return False
    for word in words:
        path = word.rstrip("/")
        if path == PARALLEL_CPUS_TESTS_UNDER:
            return True
        if path.startswith(PARALLEL_CPUS_TESTS_UNDER + "/") and path.endswith(".py"):
            try:
                if PARALLEL_CPUS_MARK in (repo / path).read_text():
                    return True
            except OSError:
                continue
    return False


def select(names: list[str] | None, ci: bool = False) -> list[KernelSpec]:
    """The specs named (all when names is empty; with `ci`, those with a ci_command); an
    unknown name, or with `ci` one that CI does not run, is an error worth one line."""
    if ci:
        in_ci = [spec for spec in MATRIX if spec.ci_command]
        if not names:
            return in_ci
        outside = [name for name in names if name not in {spec.name for spec in in_ci}]
        if outside and all(name in {spec.name for spec in MATRIX} for name in outside):
            raise ValueError(f"{', '.join(outside)} has no CI tier (CI runs: {', '.join(s.name for s in in_ci)})")
    if not names:
        return list(MATRIX)
    by_name = {spec.name: spec for spec in MATRIX}
    unknown = [name for name in names if name not in by_name]
    if unknown:
        raise ValueError(f"unknown kernel {', '.join(unknown)} (known: {', '.join(by_name)})")
    return [by_name[name] for name in names]
