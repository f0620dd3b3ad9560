"""`netprof` / `netprof tui` from the command line: start-up failures are the CLI's one-line
message (never a traceback), and the real program runs in a real pseudo-terminal."""
from __future__ import annotations

import re
import os
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from profiler.cli import main

REPO = Path(__file__).resolve().parents[2]
NETPROF = [sys.executable, "-m", "profiler.cli"]
BUSY = Path(__file__).parent / "fixtures" / "busy.json"
NOBODY = 65534


class Pty:
    """A program on a pseudo-terminal of a given size: what it draws, and keys to send."""

    def __init__(self, argv: list[str], size: tuple[int, int] = (80, 24), **popen):
        import fcntl
        import struct
        import termios

        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(size[0]), "LINES": str(size[1])}
        self.proc = subprocess.Popen(argv, stdin=slave, stdout=slave, stderr=slave, cwd=REPO, env=env,
                                     start_new_session=True, close_fds=True, **popen)
        os.close(slave)
        self.output = b""

    def read_until(self, predicate, timeout_s: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self.output):
                return True
            ready, _, _ = select.select([self.master], [], [], 0.1)
            if ready:
                try:
                    chunk = os.read(self.master, 65536)
                except OSError:  # EIO: the program closed the terminal
                    return predicate(self.output)
                if not chunk:
                    return predicate(self.output)
                self.output += chunk
        return predicate(self.output)

    def send(self, keys: str) -> None:
        os.write(self.master, keys.encode())

    def finish(self, timeout_s: float = 20.0) -> int:
        self.read_until(lambda _: self.proc.poll() is not None, timeout_s)
        try:
            return self.proc.wait(5)
        finally:
            os.close(self.master)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


ESCAPE = re.compile(rb"\x1b(\[[0-9;?<>=$]*[A-Za-z~]|\][^\x07\x1b]*(\x07|\x1b\\)|[()][A-Z0-9]|[=>])")


def plain(output: bytes) -> str:
    """What was drawn, without the escape sequences (cursor moves, colours)."""
    return ESCAPE.sub(b"", output).decode(errors="replace")


def error_lines(text: str) -> list[str]:
    return [line for line in text.replace("\r", "").splitlines() if line.startswith("netprof: ")]


def test_replay_of_a_missing_file_is_one_line(capsys):
    assert main(["tui", "--replay", "/nonexistent/capture.json"]) == 1
    err = capsys.readouterr().err
    assert err == "netprof: no such capture file: /nonexistent/capture.json\n"


def test_without_a_terminal_it_says_so(capsys):
    # pytest's stdin is not a terminal.
    assert main(["tui", "--replay", str(BUSY)]) == 1
    assert "needs a terminal" in capsys.readouterr().err


def test_bare_netprof_without_a_terminal_still_teaches(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert "netprof tui --replay capture.json" in out and "the live dashboard" in out


def test_help_documents_the_options(capsys):
    with pytest.raises(SystemExit):
        main(["tui", "--help"])
    out = capsys.readouterr().out
    for option in ("--replay", "--interval", "--window", "--export-dir"):
        assert option in out


def test_window_shorter_than_interval_is_refused(capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr(sys.__stderr__, "isatty", lambda: True)
    assert main(["tui", "--interval", "5", "--window", "2"]) == 1
    assert capsys.readouterr().err == "netprof: --window (2s) must be at least --interval (5s)\n"


def test_no_btf_is_the_same_message_as_profile(capsys, monkeypatch, tmp_path):
    """The real start-up check, over a root with no /sys/kernel/btf/vmlinux."""
    import profiler.live

    (tmp_path / "sys/kernel/tracing/events").mkdir(parents=True)  # tracefs is there, BTF is not
    monkeypatch.delenv("NETPROF_TRACEFS", raising=False)
    real = profiler.live.LiveSession

    def session_over_tmp(**kwargs):
        return real(**{**kwargs, "root": tmp_path})

    monkeypatch.setattr(profiler.live, "LiveSession", session_over_tmp)
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr(sys.__stderr__, "isatty", lambda: True)
    assert main(["tui"]) == 1
    tui_error = error_lines(capsys.readouterr().err)
    assert len(tui_error) == 2 and tui_error[0] == "netprof: attaching probes…"
    assert "BTF" in tui_error[1]
    monkeypatch.setattr("profiler.profile.LiveSession", session_over_tmp)
    assert main(["profile", "--duration", "1"]) == 1
    assert error_lines(capsys.readouterr().err) == tui_error[1:]


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run netprof as another user")
def test_not_root_in_a_real_terminal_is_one_line_and_no_traceback():
    pty = Pty([*NETPROF, "tui"], user=NOBODY, group=NOBODY, extra_groups=[])
    try:
        code = pty.finish()
    finally:
        pty.kill()
    text = pty.output.decode(errors="replace")
    assert code == 1, text
    assert "Traceback" not in text
    assert error_lines(text)[-1] == "netprof: netprof needs root to load BPF programs (run it with sudo, or as root)"


def test_replay_in_a_real_terminal_draws_and_quits():
    pty = Pty([*NETPROF, "tui", "--replay", str(BUSY)])
    try:
        drawn = ("Findings (5, capture)", "CRIT", "nplab9d1ca8-lossy", "export")
        assert pty.read_until(lambda out: all(part in plain(out) for part in drawn)), plain(pty.output)[-2000:]
        pty.send("q")
        assert pty.finish() == 0
    finally:
        pty.kill()
