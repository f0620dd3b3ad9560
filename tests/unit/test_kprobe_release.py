"""Detaching kprobes when BCC cannot open kprobe_events (a missing or hostile tracefs): the
kprobes are released, BCC's table is left empty so its own cleanup has nothing to raise on,
and an event that may be left behind is named in one inert line."""
from __future__ import annotations

from pathlib import Path

import pytest

from profiler.probes.kprobe_attach import release_and_report, release_kprobes


class FakeBcc:
    """BCC's kprobe bookkeeping (bcc/__init__.py): detach_kprobe_event_by_fn closes the perf
    fd, forgets it, then raises when removing the event through kprobe_events fails."""

    def __init__(self, events: dict[bytes, list[bytes]], kprobe_events_opens: bool) -> None:
        self.kprobe_fds = {ev: {fn: 100 + i for i, fn in enumerate(fns)} for ev, fns in events.items()}
        self.closed: list[int] = []
        self._opens = kprobe_events_opens

    def detach_kprobe_event_by_fn(self, ev_name: bytes, fn_name: bytes) -> None:
        if ev_name not in self.kprobe_fds:
            raise Exception("Kprobe %s is not attached" % ev_name)
        self.closed.append(self.kprobe_fds[ev_name].pop(fn_name))
        if not self.kprobe_fds[ev_name] and not self._opens:
            raise Exception("Failed to detach BPF from kprobe")

    def cleanup(self) -> None:
        for ev_name, by_fn in list(self.kprobe_fds.items()):
            for fn_name in list(by_fn):
                self.detach_kprobe_event_by_fn(ev_name, fn_name)


EVENTS = {b"p_tcp_conn_request": [b"syn"], b"p_tcp_v4_syn_recv_sock": [b"ack"],
          b"r_tcp_v4_syn_recv_sock": [b"ack_return"]}


def _root(tmp_path: Path, pmu: bool) -> Path:
    if pmu:
        (tmp_path / "sys/bus/event_source/devices/kprobe").mkdir(parents=True)
        (tmp_path / "sys/bus/event_source/devices/kprobe/type").write_text("6\n")
    return tmp_path


def test_bcc_alone_raises_and_leaves_the_rest_to_its_atexit_cleanup():
    # What netprof met on 6.1 with a FIFO tracefs before release_kprobes: exit 70.
    bpf = FakeBcc(EVENTS, kprobe_events_opens=False)
    with pytest.raises(Exception, match="Failed to detach"):
        bpf.cleanup()
    assert any(bpf.kprobe_fds.values())


@pytest.mark.parametrize("pmu", [True, False])
def test_every_kprobe_is_released_and_cleanup_has_nothing_left(tmp_path: Path, pmu: bool):
    bpf = FakeBcc(EVENTS, kprobe_events_opens=False)
    left = release_kprobes(bpf, _root(tmp_path, pmu))
    assert sorted(bpf.closed) == [100, 100, 100]
    assert bpf.kprobe_fds == {}
    bpf.cleanup()  # nothing to raise on
    # Made through the PMU, a kprobe is gone with its fd; else its event may be left.
    assert left == ([] if pmu else ["p_tcp_conn_request", "p_tcp_v4_syn_recv_sock", "r_tcp_v4_syn_recv_sock"])


def test_a_working_tracefs_leaves_nothing(tmp_path: Path):
    bpf = FakeBcc(EVENTS, kprobe_events_opens=True)
    assert release_kprobes(bpf, _root(tmp_path, pmu=False)) == []
    assert bpf.kprobe_fds == {}


def test_what_may_be_left_is_said_in_one_inert_line(monkeypatch, capsys):
    bpf = FakeBcc({b"p_evil\x1b]52;c;AAAA\x07": [b"fn"]}, kprobe_events_opens=False)
    monkeypatch.setattr("profiler.probes.kprobe_attach.has_kprobe_pmu", lambda root=None: False)
    release_and_report(bpf, "listen_syn_path")
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err and "\x07" not in err
    assert err.startswith("netprof: listen_syn_path: could not remove kprobe event p_evil")
