"""Bad input and missing prerequisites: one line on stderr, non-zero exit, never a traceback."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest


def netprof(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "profiler.cli", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("netprof: ")
    for needle in needles:
        assert needle in lines[0]


@pytest.mark.parametrize("value", ["abc", "0", "-3", "nan", "inf", "1e9"])
def test_bad_duration(value):
    assert_one_line_error(netprof("profile", "--duration", value), "--duration")


def test_bad_interval():
    assert_one_line_error(netprof("profile", "--interval", "0.001"), "interval")


def test_unknown_command():
    assert_one_line_error(netprof("frobnicate"), "invalid choice")


def test_missing_tracefs():
    if os.geteuid() != 0:
        pytest.skip("the root check comes first when not root")
    result = netprof("profile", "--duration", "1", env={"NETPROF_TRACEFS": "/nonexistent/tracing"})
    assert_one_line_error(result, "tracefs is not mounted", "mount -t tracefs")


def test_not_root(tmp_path):
    # Run as an unprivileged user where we can; otherwise fake the euid check in-process.
    if os.geteuid() == 0:
        from profiler.errors import NetprofError
        from profiler.kernel.features import KernelInfo, require_capture_ready

        original = os.geteuid
        os.geteuid = lambda: 1000
        try:
            with pytest.raises(NetprofError, match="needs root"):
                require_capture_ready(KernelInfo("6.18", True, False, "/sys/kernel/tracing", None))
        finally:
            os.geteuid = original
    else:
        assert_one_line_error(netprof("profile", "--duration", "1"), "needs root")


def test_no_btf_no_headers_names_what_is_missing():
    from profiler.errors import NetprofError
    from profiler.kernel.features import KernelInfo, require_capture_ready

    if os.geteuid() != 0:
        pytest.skip("the root check comes first when not root")
    with pytest.raises(NetprofError, match="neither BTF .* nor headers"):
        require_capture_ready(KernelInfo("6.18", False, False, "/sys/kernel/tracing", None))


def test_help_teaches():
    result = netprof("profile", "--help")
    assert result.returncode == 0
    assert "--duration" in result.stdout and "Ctrl-C" in result.stdout


def test_capability_mask_decoding():
    from profiler.kernel.features import effective_capabilities, missing_bpf_capabilities

    assert effective_capabilities("Name:\tx\nCapEff:\t000001ffffffffff\n") == 0x1FFFFFFFFFF
    assert missing_bpf_capabilities(0x1FFFFFFFFFF) is None
    assert missing_bpf_capabilities(0) == "CAP_BPF+CAP_PERFMON"
    assert missing_bpf_capabilities((1 << 39) | (1 << 38)) is None      # CAP_BPF + CAP_PERFMON
    assert missing_bpf_capabilities(1 << 39) == "CAP_PERFMON"
    assert missing_bpf_capabilities(1 << 21) is None                    # CAP_SYS_ADMIN alone


@pytest.mark.parametrize("args, needle", [
    (("fix", "--verify"), "add --apply"),
    (("fix", "--window", "5"), "add --apply"),
    (("fix", "--apply", "--window", "5"), "add --verify"),
    (("fix", "--apply", "--verify", "--window", "0"), "--window"),
    (("fix", "--rollback", "--from", "x.json"), "no --from"),
])
def test_fix_verify_arguments_are_checked_before_anything_runs(args, needle):
    # Refused before any capture or write: these would otherwise profile for seconds first.
    assert_one_line_error(netprof(*args), needle)
