"""The kernel-matrix harness's pure parts: matrix selection, apt answers, the vng command
line, junit and probe-table parsing, and the rendered docs/kernels.md."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.kernels import matrix, provision, results, vm

JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="4">
<testcase classname="tests.integration.test_a" name="test_ok" time="1.0"/>
<testcase classname="tests.integration.test_a" name="test_bad" time="1.0"><failure message="x"/></testcase>
<testcase classname="tests.integration.test_b" name="test_err" time="1.0"><error message="y"/></testcase>
<testcase classname="tests.integration.test_b" name="test_skip" time="0"><skipped message="z"/></testcase>
</testsuite></testsuites>"""


def test_select_names_and_rejects_unknown():
    assert [s.name for s in matrix.select(["bookworm-6.1"])] == ["bookworm-6.1"]
    assert len(matrix.select(None)) == len(matrix.MATRIX)
    with pytest.raises(ValueError, match="unknown kernel nope"):
        matrix.select(["nope"])


def test_ci_selects_the_entries_with_a_ci_command_and_covers_every_probe_and_the_nic_tiers():
    ci = matrix.select(None, ci=True)
    assert [s.name for s in ci] == ["bookworm-6.1", "bookworm-6.1-mq", "bookworm-6.1-nics"]
    assert all(s.ci_command for s in ci)
    assert all(f in ci[0].ci_command for f in matrix.CI_SUBSET_FILES)
    assert "tests/kernels/mq/test_irq_affinity.py" in ci[1].ci_command and "test_verify" not in ci[1].ci_command
    # The NIC guests boot the kernel whose probe table bookworm-6.1 records: none of their own.
    assert ci[0].probe_table and not ci[1].probe_table and not ci[2].probe_table
    assert [s.name for s in matrix.select(["bookworm-6.1-nics"], ci=True)] == ["bookworm-6.1-nics"]
    with pytest.raises(ValueError, match="trixie has no CI tier"):
        matrix.select(["trixie"], ci=True)
    with pytest.raises(ValueError, match="unknown kernel nope"):
        matrix.select(["nope"], ci=True)


def test_the_command_each_guest_runs():
    from tests.kernels.__main__ import DEFAULT_COMMAND, REPO, command_for, parse_args

    six, mq = matrix.select(["bookworm-6.1", "bookworm-6.1-mq"])
    assert command_for(six, parse_args([])) == DEFAULT_COMMAND
    assert command_for(mq, parse_args([])) == matrix.MQ_TESTS
    assert command_for(six, parse_args(["--ci"])) == matrix.CI_SUBSET_TESTS
    assert command_for(mq, parse_args(["--ci"])) == matrix.CI_MQ_TESTS
    assert command_for(mq, parse_args(["--ci", "-c", "uname -r"])) == "uname -r"
    # 5.10's declared selection: every probe's files, and what only 5.10 needs; the
    # conntrack race in its second boot (the command has no -m of its own).
    (bullseye,) = matrix.select(["bullseye"])
    command = command_for(bullseye, parse_args([]))
    assert command == matrix.BULLSEYE_TESTS and "-m" not in command.split("pytest", 1)[1].split()
    assert all(f in command for f in (*matrix.CI_SUBSET_FILES, "tests/integration/test_drop_sites.py"))
    assert matrix.parallel_cpus_phase(bullseye, command, REPO)


def test_matrix_covers_headers_and_btf_variants_and_newer_suites():
    specs = matrix.MATRIX
    assert any(s.source == "apt" and s.headers and s.btf for s in specs)
    assert any(s.source == "apt" and not s.headers for s in specs)
    assert any(s.source == "apt" and not s.btf for s in specs)
    assert {s.suite for s in specs if s.source == "suite"} >= {"trixie"}
    assert len({s.name for s in specs}) == len(specs)


def test_parse_dependency_picks_the_versioned_image():
    text = "linux-image-amd64\n  Depends: linux-base\n  Depends: linux-image-6.1.0-57-amd64\n"
    assert provision.parse_dependency(text, "linux-image-") == "linux-image-6.1.0-57-amd64"
    with pytest.raises(provision.ProvisionError):
        provision.parse_dependency("x\n  Depends: foo\n", "linux-image-")


def test_kernel_parts_of_a_split_image_package():
    text = ("linux-image-7.2.12+deb14-amd64\n  Depends: linux-base-7.2.12+deb14-amd64\n"
            "  Depends: linux-binary-7.2.12+deb14-amd64\n  Depends: linux-modules-7.2.12+deb14-amd64\n"
            "  Depends: dracut\n")
    assert provision.kernel_parts(text, "7.2.12+deb14-amd64") == [
        "linux-binary-7.2.12+deb14-amd64", "linux-modules-7.2.12+deb14-amd64"]
    assert provision.release_of_image_package("linux-image-6.1.0-57-amd64") == "6.1.0-57-amd64"


def test_unpacked_image_found_in_boot_or_beside_the_modules(tmp_path):
    assert provision.unpacked_image(tmp_path, "7.2") is None
    modules_image = tmp_path / "usr/lib/modules/7.2/vmlinuz"
    modules_image.parent.mkdir(parents=True)
    modules_image.write_bytes(b"x")
    assert provision.unpacked_image(tmp_path, "7.2") == modules_image


def test_archive_uri_skips_security_and_reads_both_formats():
    deb822 = "Types: deb\nURIs: http://mirror.example/debian-security\n\nTypes: deb\nURIs: http://mirror.example/debian\n"
    assert provision.archive_uri_from_sources(deb822) == "http://mirror.example/debian"
    one_line = "deb [signed-by=/k.gpg] http://mirror.example/debian bookworm main\n"
    assert provision.archive_uri_from_sources(one_line) == "http://mirror.example/debian"
    assert provision.archive_uri_from_sources("# nothing\n") is None


def test_vng_command_is_niced_fixed_size_and_masks_per_spec(tmp_path):
    spec = matrix.KernelSpec("x", "apt", headers=False, btf=True)
    kernel = provision.BootableKernel(spec, "6.1.0-57-amd64", Path("/boot/vmlinuz-6.1.0-57-amd64"))
    argv = vm.vng_command(Path("/v/bin"), kernel, Path("/repo"), tmp_path, "uname -r")
    assert argv[:3] == ["nice", "-n", "10"]
    assert argv[argv.index("--cpus") + 1] == str(matrix.GUEST_CPUS)
    assert argv[argv.index("--memory") + 1] == matrix.GUEST_MEMORY
    assert "--disable-kvm" in argv and argv[argv.index("--run") + 1] == "/boot/vmlinuz-6.1.0-57-amd64"
    assert argv[argv.index("--rwdir") + 1] == str(tmp_path)
    # The guest kernel's warnings, oopses and panics reach console.log.
    assert "--verbose" in argv and argv[argv.index("--append") + 1] == "loglevel=5"
    # One TCG thread for every entry (cross-CPU text patching under MTTCG); a thread per
    # vCPU only where asked (the parallel_cpus boot).
    assert f"--qemu-opts={vm.TCG_ONE_THREAD}" in argv
    assert all(spec.one_tcg_thread for spec in matrix.MATRIX)
    threads = provision.BootableKernel(matrix.KernelSpec("x", "apt", one_tcg_thread=False), "6.1", Path("/boot/v"))
    assert not any(a.startswith("--qemu-opts") for a in vm.vng_command(Path("/v/bin"), threads, Path("/repo"), tmp_path, "true"))
    guest = argv[-1]
    assert "NETPROF_GUEST_HIDE_HEADERS=1" in guest and "NETPROF_GUEST_HIDE_BTF=0" in guest
    assert guest.endswith("'uname -r'")
    assert f"bash {tmp_path / vm.GUEST_SCRIPT_COPY} " in guest  # its own copy, not the live tree
    assert "NETPROF_GUEST_PYTEST_MARK" not in guest
    marked = vm.vng_command(Path("/v/bin"), kernel, Path("/repo"), tmp_path, "true", pytest_mark="not parallel_cpus")[-1]
    assert "NETPROF_GUEST_PYTEST_MARK='not parallel_cpus' " in marked
    assert "--rodir" not in argv  # an installed kernel's modules are in the guest's /lib/modules
    assert "NETPROF_GUEST_PROBE_TABLE=1" in guest
    no_table = provision.BootableKernel(matrix.KernelSpec("x", "apt", probe_table=False), "6.1", Path("/boot/v"))
    assert "NETPROF_GUEST_PROBE_TABLE=0" in vm.vng_command(Path("/v/bin"), no_table, Path("/repo"), tmp_path, "true")[-1]


def test_vng_command_exposes_an_unpacked_kernels_modules_and_gives_two_nics(tmp_path):
    spec = matrix.KernelSpec("trixie", "suite", suite="trixie")
    tree = Path("/var/cache/netprof-kernels/unpacked/6.12.117+deb13-amd64")
    kernel = provision.BootableKernel(spec, "6.12.117+deb13-amd64", tree / "boot/vmlinuz-6.12.117+deb13-amd64",
                                      tree=tree)
    argv = vm.vng_command(Path("/v/bin"), kernel, Path("/repo"), tmp_path, "true")
    assert argv[argv.index("--rodir") + 1] == str(tree)
    assert argv[argv.index("--network") + 1] == "loop"
    assert argv.index("--rodir") < argv.index("--")
    quiet = provision.BootableKernel(matrix.KernelSpec("x", "apt", network=None), "6.1", Path("/boot/v"))
    assert "--network" not in vm.vng_command(Path("/v/bin"), quiet, Path("/repo"), tmp_path, "true")


def test_parse_junit_counts_each_outcome():
    counts = results.parse_junit(JUNIT)
    assert (counts.passed, counts.failed, counts.errors, counts.skipped) == (1, 1, 1, 1)
    assert counts.failed_tests == ("tests.integration.test_a::test_bad", "tests.integration.test_b::test_err")


def test_compiled_with_from_profile_stderr():
    assert results.parse_compiled_with("netprof: capturing for 2s (btf+shim); Ctrl-C\n") == "btf+shim"
    assert results.parse_compiled_with("nothing here") is None


def test_read_exit_status(tmp_path):
    assert vm.read_exit_status(tmp_path) is None
    (tmp_path / vm.EXIT_STATUS_FILE).write_text("3\n")
    assert vm.read_exit_status(tmp_path) == 3


def test_results_round_trip_and_render(tmp_path):
    probes = json.dumps({"probes": [
        {"name": "drops", "attached": True, "via": "tracepoint:skb:kfree_skb", "error": None},
        {"name": "listen_syn_path", "attached": False, "via": "kprobe:tcp_conn_request",
         "error": "kprobes not available"}]})
    booted = results.KernelResult("bookworm-6.1", "6.1.0-57-amd64", 1, 1260.0, False, "pytest",
                                  results.parse_junit(JUNIT), "btf+shim", results.parse_probe_table(probes))
    missing = results.KernelResult("host", "", None, 0.0, False, "pytest", None, not_run="no image in /boot")
    results.save(booted, tmp_path / "bookworm-6.1")
    results.save(missing, tmp_path / "host")
    loaded = results.load_all(tmp_path)
    assert [r.kernel for r in loaded] == ["bookworm-6.1", "host"]
    assert loaded[0] == booted and not loaded[0].ok and not loaded[1].ok
    text = results.render_markdown(loaded, "# Kernels")
    assert "| bookworm-6.1 | 6.1.0-57-amd64 | btf+shim | `pytest` | 1 passed, 2 failed, 1 skipped | 21.0 min |" in text
    assert "**host**: no image in /boot" in text
    assert "| listen_syn_path | ✗ kprobe:tcp_conn_request: kprobes not available |" in text
    assert "| drops | tracepoint:skb:kfree_skb |" in text
    piped = results.KernelResult("trixie", "6.12", 0, 60.0, False, "uname -r | cat", None)
    assert "`uname -r \\| cat`" in results.render_markdown([piped], "# Kernels")


def test_lab_time_scale_only_stretches():
    from profiler.lab.scenarios import lab_time_scale

    assert lab_time_scale({}) == 1.0
    assert lab_time_scale({"NETPROF_LAB_TIME_SCALE": "10"}) == 10.0
    assert lab_time_scale({"NETPROF_LAB_TIME_SCALE": "0.1"}) == 1.0
    assert lab_time_scale({"NETPROF_LAB_TIME_SCALE": "fast"}) == 1.0


def test_the_vagrant_guest_runs_its_tier_on_a_natted_network(tmp_path):
    spec, = matrix.select(["bookworm-6.1-vagrant"])
    assert spec.tier == "vagrant" and spec.command == matrix.VAGRANT_TESTS and not spec.ci_command
    assert "tests/kernels/vagrant" in spec.command
    kernel = provision.BootableKernel(spec, "6.1.0-57-amd64", Path("/boot/vmlinuz-6.1.0-57-amd64"))
    argv = vm.vng_command(Path("/v/bin"), kernel, Path("/repo"), tmp_path, spec.command)
    # QEMU's user-mode NAT (apt and PyPI for bootstrap.sh), and the guest told to configure it.
    assert argv[argv.index("--network") + 1] == "user"
    assert "NETPROF_GUEST_USER_NET=1" in argv[-1] and "NETPROF_GUEST_TIER=vagrant" in argv[-1]
    six = provision.BootableKernel(matrix.select(["bookworm-6.1"])[0], "6.1", Path("/boot/v"))
    assert "NETPROF_GUEST_USER_NET" not in vm.vng_command(Path("/v/bin"), six, Path("/repo"), tmp_path, "true")[-1]


def test_the_vagrant_tier_is_never_collected_on_the_host(monkeypatch):
    import importlib

    import tests.kernels.conftest as guest_tiers

    monkeypatch.delenv("NETPROF_GUEST_TIER", raising=False)
    assert "vagrant" in importlib.reload(guest_tiers).collect_ignore
    monkeypatch.setenv("NETPROF_GUEST_TIER", "vagrant")
    assert "vagrant" not in importlib.reload(guest_tiers).collect_ignore
    monkeypatch.delenv("NETPROF_GUEST_TIER")
    importlib.reload(guest_tiers)


FAKE_VNG = """#!/bin/sh
# A stand-in for virtme-ng: finds --rwdir, counts its boots there, and per the plan in
# $out/plan either never reaches the guest command ("hang"), starts it and then stalls
# ("stall"), or runs it ("run": guest.sh's marker, then an exit status of 0).
out=""
while [ $# -gt 0 ]; do [ "$1" = --rwdir ] && out=$2; shift; done
echo boot >> "$out/boots"
step=$(sed -n "$(wc -l < "$out/boots")p" "$out/plan")
echo "fake console: boot $(wc -l < "$out/boots") will $step"
case $step in
  hang) exec sleep 60 ;;
  stall) date +%s > "$out/guest_started"; exec sleep 60 ;;
  run) date +%s > "$out/guest_started"; echo 0 > "$out/exit_status" ;;
esac
"""


@pytest.fixture
def fake_vng(tmp_path, monkeypatch):
    bin_dir = tmp_path / "vng-bin"
    bin_dir.mkdir()
    (bin_dir / "vng").write_text(FAKE_VNG)
    (bin_dir / "vng").chmod(0o755)
    monkeypatch.setattr(vm, "BOOT_LIMIT_S", 1.5)
    spec = matrix.KernelSpec("fake", "apt", network=None, time_limit_s=4)
    kernel = provision.BootableKernel(spec, "6.1", Path("/boot/vmlinuz-fake"))

    def run(plan: list[str]) -> tuple[vm.GuestRun, Path]:
        out = tmp_path / "out"
        out.mkdir()
        (out / "plan").write_text("\n".join(plan) + "\n")
        return vm.boot_and_run(bin_dir, kernel, tmp_path, out, "true"), out
    return run


def test_a_boot_that_never_reaches_the_command_is_booted_once_more(fake_vng, capsys):
    run, out = fake_vng(["hang", "run"])
    assert (run.exit_status, run.timed_out, run.boot_hangs) == (0, False, 1)
    assert (out / "boots").read_text().count("boot") == 2
    assert "boot 1 will hang" in (out / "console.boot-hang-1.log").read_text()
    assert "boot 2 will run" in (out / "console.log").read_text()
    assert "stuck in boot" in capsys.readouterr().err


def test_boot_hangs_are_retried_only_so_often_and_a_started_command_never(fake_vng):
    run, out = fake_vng(["hang", "hang", "run"])
    assert (run.exit_status, run.timed_out, run.boot_hangs) == (None, True, vm.BOOT_ATTEMPTS)
    assert (out / "boots").read_text().count("boot") == vm.BOOT_ATTEMPTS
    result = results.KernelResult("fake", "6.1", None, run.wall_s, True, "true", None, boot_hangs=run.boot_hangs)
    assert "2 boots stuck, killed" in results._suite_cell(result)


def test_a_command_that_started_and_stalled_is_not_retried(fake_vng):
    run, out = fake_vng(["stall", "run"])
    assert (run.exit_status, run.timed_out, run.boot_hangs) == (None, True, 0)
    assert (out / "boots").read_text().count("boot") == 1
    assert run.wall_s >= 4


def test_a_failed_guests_console_tail_is_inert(tmp_path):
    from tests.kernels.__main__ import console_tail
    (tmp_path / "console.log").write_text("".join(f"line {i}\n" for i in range(100)) + "oops \x1b]52;c;evil\x07\n")
    tail = console_tail(tmp_path / "console.log", lines=3)
    assert tail[:2] == ["line 98", "line 99"] and "\x1b" not in tail[2] and "\\x1b" in tail[2]
    assert console_tail(tmp_path / "missing.log")[0].startswith("(no console")


def test_which_commands_run_the_parallel_cpus_tests_in_a_second_boot():
    from tests.kernels.__main__ import DEFAULT_COMMAND, REPO

    six, mq, headers_only = matrix.select(["bookworm-6.1", "bookworm-6.1-mq", "bookworm-6.1-headers-only"])
    assert matrix.parallel_cpus_phase(six, DEFAULT_COMMAND, REPO)
    assert matrix.parallel_cpus_phase(six, matrix.CI_SUBSET_TESTS, REPO)  # test_conntrack.py has them
    # No file of these commands marks a test: no boot for nothing.
    assert not matrix.parallel_cpus_phase(headers_only, matrix.HEADERS_PATH_TESTS, REPO)
    assert not matrix.parallel_cpus_phase(mq, matrix.MQ_TESTS, REPO)
    assert not matrix.parallel_cpus_phase(six, "uname -r; ls tests/integration", REPO)
    threads = matrix.KernelSpec("x", "apt", one_tcg_thread=False)
    assert not matrix.parallel_cpus_phase(threads, DEFAULT_COMMAND, REPO)
    # A command that picks its own markers keeps them: one boot, its own selection.
    own_marks = DEFAULT_COMMAND + ' -m "not parallel_cpus"'
    assert not matrix.parallel_cpus_phase(six, own_marks, REPO)
    assert not matrix.parallel_cpus_phase(six, DEFAULT_COMMAND + " -mslow", REPO)
    assert matrix.parallel_cpus_phase(six, "python3 -m pytest tests/integration", REPO)


def test_only_the_integration_tier_marks_tests_parallel_cpus():
    """The harness looks for the marker under tests/integration only (parallel_cpus_phase)."""
    from tests.kernels.__main__ import REPO

    marking = {path.relative_to(REPO).as_posix() for path in (REPO / "tests").rglob("test_*.py")
               if f"mark.{matrix.PARALLEL_CPUS_MARK}" in path.read_text()}
    assert marking >= {"tests/integration/test_conntrack.py", "tests/integration/test_findings.py"}
    assert all(path.startswith(matrix.PARALLEL_CPUS_TESTS_UNDER + "/") for path in marking), marking


SPLIT_VNG = """#!{python}
# A stand-in for virtme-ng: writes a junit for the boot it is (which tests the -m expression
# in the guest's environment selects), records its QEMU options, and exits.
import pathlib, sys
argv = sys.argv[1:]
out = pathlib.Path(argv[argv.index("--rwdir") + 1])
guest = argv[-1]
opts = [a for a in argv if a.startswith("--qemu-opts=")]
(out / "boot.txt").write_text(repr(opts) + "\\n" + guest + "\\n")
(out / "guest_started").write_text("1")
second = "PYTEST_MARK=parallel_cpus" in guest
case = '<testcase classname="t" name="race"><failure message="0 clashes"/></testcase>' if second else \
    '<testcase classname="t" name="a"/><testcase classname="t" name="b"/>'
(out / "junit.xml").write_text("<testsuites><testsuite>" + case + "</testsuite></testsuites>")
(out / "exit_status").write_text("1" if second else "0")
print("fake console", "second" if second else "first")
"""


def test_a_one_thread_entry_runs_its_parallel_cpus_tests_in_a_second_boot(tmp_path, monkeypatch):
    import sys

    from tests.kernels import __main__ as harness

    bin_dir = tmp_path / "vng-bin"
    bin_dir.mkdir()
    (bin_dir / "vng").write_text(SPLIT_VNG.format(python=sys.executable))
    (bin_dir / "vng").chmod(0o755)
    spec = matrix.KernelSpec("fake", "apt", network=None, time_limit_s=30)
    monkeypatch.setattr(provision, "provide", lambda s: provision.BootableKernel(s, "6.1", Path("/boot/v")))
    result = harness.run_one(spec, harness.parse_args(["--out", str(tmp_path / "out")]), bin_dir)
    first, second = tmp_path / "out/fake", tmp_path / "out/fake" / harness.PARALLEL_CPUS_DIR
    boot1, boot2 = (first / "boot.txt").read_text(), (second / "boot.txt").read_text()
    assert vm.TCG_ONE_THREAD in boot1 and "PYTEST_MARK='not parallel_cpus'" in boot1
    assert "qemu-opts" not in boot2 and "PYTEST_MARK=parallel_cpus" in boot2
    assert "NETPROF_GUEST_PROBE_TABLE=0" in boot2  # the first boot recorded the probe table
    # One result for the kernel: both boots' tests, the second's failure and exit status.
    assert (result.suite.passed, result.suite.failed, result.suite.failed_tests) == (2, 1, ("t::race",))
    assert result.exit_status == 1 and not result.ok
    assert result.parallel_cpus.failed == 1
    assert results.load_all(tmp_path / "out") == [result]
    assert "2 passed, 1 failed (of which 1 in a second boot, a TCG thread per vCPU)" in results._suite_cell(result)


def test_no_second_boot_after_a_first_that_never_ran_its_command(tmp_path, monkeypatch):
    from tests.kernels import __main__ as harness

    def never_ran(vng_bin, kernel, repo, out, command, pytest_mark=None):
        boots.append(pytest_mark)
        return vm.GuestRun(None, 1.0, True, out / "console.log")

    boots: list = []
    monkeypatch.setattr(vm, "boot_and_run", never_ran)
    monkeypatch.setattr(provision, "provide", lambda s: provision.BootableKernel(s, "6.1", Path("/boot/v")))
    result = harness.run_one(matrix.KernelSpec("fake", "apt"), harness.parse_args(["--out", str(tmp_path)]), Path("/v"))
    assert boots == ["not parallel_cpus"] and result.timed_out and result.parallel_cpus is None
