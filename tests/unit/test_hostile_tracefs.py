"""A tracefs (or /proc, /sys) whose files are FIFOs must not hang netprof (issue 12, item 7):
every reader returns promptly, and a program whose tracepoint files BCC would block on is
refused with one line before BCC sees it."""
from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from profiler.errors import NetprofError
from profiler.kernel.features import KernelInfo, tracepoint_fields
from profiler.kernel.kallsyms import Kallsyms
from profiler.kernel.kernel_files import (
    NotRegularFile,
    read_kernel_text,
    tracepoint_files_problem,
    tracepoints_in_source,
)
from profiler.kernel.offsets import read_layout_from_tracefs
from profiler.system.node import read_sysctls

PROMPT_S = 5.0
EVENTS = ("skb/kfree_skb", "irq/softirq_entry", "tcp/tcp_retransmit_skb", "irq/softirq_raise",
          "irq/softirq_exit", "napi/napi_poll", "syscalls/sys_enter_listen")


@pytest.fixture
def fifo_tracefs(tmp_path) -> Path:
    """A tracefs tree (under a node root) whose format and id files are FIFOs nobody writes."""
    tracefs = tmp_path / "sys/kernel/tracing"
    for event in EVENTS:
        directory = tracefs / "events" / event
        directory.mkdir(parents=True)
        os.mkfifo(directory / "format")
        os.mkfifo(directory / "id")
    return tracefs


def _unblock_fifos(root: Path) -> None:
    """Give every FIFO under root a writer and close it at once: a reader stuck in open()
    gets EOF, so a test that failed by hanging leaves no thread behind."""
    for directory, _, names in os.walk(root):
        for name in names:
            path = Path(directory, name)
            if path.is_fifo():
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
                except OSError:
                    pass  # no reader waiting on this one


def _returns_promptly(call: Callable[[], object], fifo_root: Path) -> object:
    outcome: dict[str, object] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the test thread below
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(PROMPT_S)
    if thread.is_alive():
        _unblock_fifos(fifo_root)
        thread.join(PROMPT_S)
        pytest.fail(f"blocked for more than {PROMPT_S:g}s on a FIFO")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["value"]


def test_tracepoint_fields_of_a_fifo_format_are_empty_at_once(fifo_tracefs):
    assert _returns_promptly(lambda: tracepoint_fields(str(fifo_tracefs), "skb/kfree_skb"), fifo_tracefs) == set()


def test_the_headers_path_fails_with_one_line_naming_the_fifo(fifo_tracefs):
    with pytest.raises(NetprofError) as caught:
        _returns_promptly(lambda: read_layout_from_tracefs(str(fifo_tracefs)), fifo_tracefs)
    message = str(caught.value)
    assert "\n" not in message
    assert "skb/kfree_skb/format" in message and "FIFO" in message


def test_kallsyms_and_sysctls_that_are_fifos_read_as_absent(tmp_path):
    (tmp_path / "proc/sys/net/core").mkdir(parents=True)
    os.mkfifo(tmp_path / "proc/kallsyms")
    os.mkfifo(tmp_path / "proc/sys/net/core/somaxconn")
    (tmp_path / "proc/sys/net/core/rmem_max").write_text("212992\n")
    table = _returns_promptly(lambda: Kallsyms.load(tmp_path), tmp_path)
    assert len(table) == 0
    values = _returns_promptly(
        lambda: read_sysctls(("net.core.somaxconn", "net.core.rmem_max"), tmp_path / "proc/sys"), tmp_path)
    assert values == {"net.core.rmem_max": "212992"}


def test_the_reader_refuses_without_opening(tmp_path):
    fifo = tmp_path / "format"
    os.mkfifo(fifo)
    with pytest.raises(NotRegularFile) as caught:
        _returns_promptly(lambda: read_kernel_text(fifo), tmp_path)
    assert str(caught.value) == f"{fifo} is a FIFO, not a regular file"
    regular = tmp_path / "ok"
    regular.write_text("name: kfree_skb\n")
    assert read_kernel_text(regular) == "name: kfree_skb\n"


def test_bcc_is_never_handed_a_program_whose_tracepoint_files_are_fifos(fifo_tracefs, tmp_path):
    """BCC reads format (compile) and id (attach) itself; the loader checks them first."""
    if not Path("/sys/kernel/btf/vmlinux").is_file():
        pytest.skip("the BTF loader needs /sys/kernel/btf/vmlinux")
    from profiler.kernel.loader import BpfLoader

    info = KernelInfo("6.18.44-test", btf=True, kprobes=False, tracefs=str(fifo_tracefs), headers=None)
    loader = BpfLoader(info, cache_dir=tmp_path / "cache")
    with pytest.raises(NetprofError) as caught:
        _returns_promptly(lambda: loader.compile("retransmits"), fifo_tracefs)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("not loading the retransmits BPF program: tracepoint tcp:tcp_retransmit_skb:")
    assert "FIFO, not a regular file" in message


def test_which_tracepoints_a_program_uses_and_which_files_are_checked(fifo_tracefs, tmp_path):
    source = "RAW_TRACEPOINT_PROBE(sock_rcvqueue_full) {}\nTRACEPOINT_PROBE(skb, kfree_skb) {}\n" \
             "TRACEPOINT_PROBE( irq , softirq_entry ) {}\nTRACEPOINT_PROBE(skb, kfree_skb) {}\n"
    assert tracepoints_in_source(source) == ["skb/kfree_skb", "irq/softirq_entry"]
    healthy = tmp_path / "healthy"
    (healthy / "events/skb/kfree_skb").mkdir(parents=True)
    (healthy / "events/skb/kfree_skb/format").write_text("name: kfree_skb\n")
    (healthy / "events/skb/kfree_skb/id").write_text("1234\n")
    assert tracepoint_files_problem(["skb/kfree_skb"], [healthy]) is None
    (healthy / "events/skb/kfree_skb/id").unlink()
    os.mkfifo(healthy / "events/skb/kfree_skb/id")
    assert tracepoint_files_problem(["skb/kfree_skb"], [healthy]) == \
        f"tracepoint skb:kfree_skb: {healthy}/events/skb/kfree_skb/id is a FIFO, not a regular file"


def test_a_fifo_where_a_netns_handle_should_be_is_refused_at_once(tmp_path):
    """/run/netns/<name> entries are opened to setns into them; a FIFO there must not hang."""
    from profiler.system.netns import run_in_netns

    fifo = tmp_path / "netns-fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError):
        _returns_promptly(lambda: run_in_netns(fifo, lambda: "entered", timeout_s=PROMPT_S * 3), tmp_path)
