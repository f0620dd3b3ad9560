"""What `profile` prints for people and for scripts: progress only on a terminal, no wrapping
when piped, tab-separated tables; and the small CLI promises (issue 17, items 9, 10, 13)."""
from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType

import pytest

from profiler.cli import build_parser
from profiler.progress import ProgressLine
from profiler.report import print_report, render_tsv
from profiler.snapshot import CpuInterval, PodInterval, Snapshot, SoftirqVector

BUSY = Path(__file__).parents[1] / "tui" / "fixtures" / "busy.json"


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def snapshot(drops: int, retransmits: int, net_rx_runs: int) -> Snapshot:
    # As the drop source writes them: per pod and per CPU (events count each drop once, by CPU).
    pod = PodInterval("web", 11, retransmits=retransmits, drops=MappingProxyType({"SOCKET_RCVBUFF": drops}))
    cpu = CpuInterval(0, softirq=MappingProxyType({"NET_RX": SoftirqVector(count=net_rx_runs)}),
                      drops=MappingProxyType({"SOCKET_RCVBUFF": drops}))
    return Snapshot(0.0, 1.0, (pod,), cpus=(cpu,))


def test_progress_counts_events_on_a_terminal_and_erases_itself():
    clock = iter([0.0, 0.0, 1.0, 2.0, 2.0]).__next__
    screen = Terminal()
    progress = ProgressLine(10.0, stream=screen, clock=clock)
    progress.started(12, 14)
    progress.snapshot(snapshot(drops=100, retransmits=5, net_rx_runs=40))
    progress.snapshot(snapshot(drops=1000, retransmits=0, net_rx_runs=60))
    assert progress.events == 100 + 5 + 40 + 1000 + 60
    progress.close()
    text = screen.getvalue()
    assert "capturing 2/10s · 1,205 events · probes 12/14 attached" in text
    assert text.endswith("\r\x1b[2K"), "the line is erased at the end"


def test_no_progress_when_stderr_is_not_a_terminal():
    piped = io.StringIO()
    progress = ProgressLine(5.0, stream=piped)
    progress.started(3, 3)
    progress.snapshot(snapshot(drops=1, retransmits=1, net_rx_runs=1))
    progress.close()
    assert piped.getvalue() == ""


def test_a_piped_report_never_wraps_a_pod_name(capsys, monkeypatch):
    doc = json.loads(BUSY.read_text())
    long_name = "payments-" + "x" * 150 + "-api-0"
    doc["pods"][0]["pod"] = long_name
    print_report(doc)   # stdout is captured: not a terminal
    out = capsys.readouterr().out
    assert any(long_name in line for line in out.splitlines()), "the name is on one line"


def test_tsv_is_the_reports_tables_one_row_a_line():
    doc = json.loads(BUSY.read_text())
    text = render_tsv(doc)
    sections = [block.splitlines() for block in text.strip().split("\n\n")]
    titles = [lines[0] for lines in sections]
    assert titles[:2] == ["# Findings", "# Pods"]
    for lines in sections:
        width = len(lines[1].split("\t"))
        assert width >= 2 and all(len(line.split("\t")) == width for line in lines[2:]), lines[0]
    pods = next(lines for lines in sections if lines[0] == "# Pods")
    receiver = next(line for line in pods if line.startswith("nplab1e95de-receiver\t"))
    assert receiver.split("\t")[2] == "NETFILTER_DROP 2120515"


def test_tsv_fields_hold_no_tab_or_line_break():
    doc = json.loads(BUSY.read_text())
    doc["pods"][0]["pod"] = "a\tb\nc"
    pods = render_tsv(doc).split("# Pods\n")[1].split("\n\n")[0].splitlines()
    assert all(len(line.split("\t")) == len(pods[0].split("\t")) for line in pods)


def netprof(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "profiler.cli", *args], capture_output=True, text=True, timeout=60)


def test_export_makes_no_folders(tmp_path):
    target = tmp_path / "missing" / "dir" / "x.folded"
    result = netprof("export", str(BUSY), "--format", "folded", "-o", str(target))
    assert result.returncode == 1 and "no folder" in result.stderr and len(result.stderr.splitlines()) == 1
    assert not (tmp_path / "missing").exists()


def test_output_is_the_same_word_everywhere_and_formats_are_explained():
    parser = build_parser()
    assert parser.parse_args(["fix", "--output", "d"]).out == Path("d")
    assert parser.parse_args(["fix", "--out", "d"]).out == Path("d"), "the old name still works"
    assert parser.parse_args(["profile", "--format", "tsv"]).format == "tsv"
    help_text = netprof("export", "--help").stdout
    assert "flamegraph-svg (an interactive SVG" in " ".join(help_text.split())


def test_json_and_another_format_are_refused_in_one_line():
    result = netprof("profile", "--json", "--format", "tsv", "-d", "1")
    assert result.returncode == 1 and result.stderr.startswith("netprof: --json and --format tsv")


def test_error_lines_are_inert_and_one_line(tmp_path):
    hostile = tmp_path / "evil\x1b]0;pwned\x07\nname.json"
    hostile.write_text('{"schema": "netprof.profile/v1", "pods": 5}')
    result = netprof("export", str(hostile), "--format", "folded")
    assert result.returncode == 1
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr
    assert len(result.stderr.splitlines()) == 1 and "\\x1b]0;pwned" in result.stderr
