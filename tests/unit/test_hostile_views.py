"""A capture with terminal escapes and rich markup in every outside field (tests/hostile.py)
through the report, the fix plan and every export: nothing a terminal would act on comes
out, and markup shows as the text it is."""
from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from profiler.analysis.findings import Finding, rank
from profiler.exports import EXPORT_FORMATS, render, write_all
from profiler.exports.prometheus import exposition_text
from profiler.fix.command import print_plan
from profiler.inert import inert
from profiler.report import print_report
from tests.export_readers import read_prometheus
from tests.hostile import ESCAPES, MARKUP, controls, hostile_capture, strings_of


@pytest.fixture
def doc() -> dict:
    return hostile_capture()


def printed(draw) -> str:
    """What a call prints on a plain console (no colour, so every ESC came from the data)."""
    out = io.StringIO()
    draw(Console(file=out, width=200, color_system=None, force_terminal=False))
    return out.getvalue()


def test_the_capture_really_is_hostile(doc):
    # Guards the other tests: the payload is in the fields they render.
    assert controls(doc["node"]["hostname"]) and controls(doc["pods"][0]["pod"])
    assert controls(doc["findings"][0]["summary"]) and controls(doc["drop_sites"][0]["symbol"])


def test_report_prints_no_control_and_names_literally(doc):
    text = printed(lambda console: print_report(doc, console))
    assert controls(text) == []
    assert f"vm{MARKUP}" in text, "the hostname shows, its markup as text"
    # A pod named like markup is shown as its name, not styled by it.
    assert f"nplab1e95de-receiver{MARKUP}" in text
    assert inert(ESCAPES) in text, "the escapes show, as visible escapes"
    assert "nft_do_chain+0x3e8[red]x[/red]" in text, "drop sites too"


def test_fix_plan_prints_no_control(doc):
    findings = rank([Finding.from_json(f) for f in doc["findings"]])
    text = printed(lambda console: print_plan(findings, console))
    assert controls(text) == []
    assert f"stop the parallel DNS A/AAAA race{MARKUP}" in text
    assert "second line" in text, "a rationale keeps its line breaks"


@pytest.mark.parametrize("name", ["capture", *EXPORT_FORMATS])
def test_every_export_is_inert(doc, name):
    text = render(doc, name)
    assert controls(text) == []
    if name in ("capture", "speedscope", "histograms-json"):
        decoded = [s for s in strings_of(json.loads(text)) if controls(s.replace("\n", ""))]
        assert decoded == [], "no control even once decoded (jq -r, speedscope's UI)"


def test_exports_keep_the_data(doc):
    """Inert, not dropped: the hostile names are still there, as visible escapes."""
    folded = render(doc, "folded")
    assert "nplab-stacked[red]x[/red]\\x1b[2J" in folded
    assert "tcp_v4_rcv[red]x[/red]" in folded
    families = read_prometheus(exposition_text(doc))
    pods = {sample.labels["pod"] for sample in families["netprof_retransmits"]}
    assert f"nplab1e95de-receiver{MARKUP}{inert(ESCAPES)}" in pods
    devices = {sample.labels["device"] for sample in families["netprof_napi_polls"]}
    assert devices == {f"(no_device){MARKUP}{inert(ESCAPES)}"}
    capture = json.loads(render(doc, "capture"))
    assert capture["node"]["hostname"] == f"vm{MARKUP}{inert(ESCAPES)}"


def test_prometheus_escapes_what_its_format_needs():
    """Backslash, double quote and line feed in a label are escaped by the exposition format
    (prometheus-client) and read back exactly; an ESC beside them is made inert."""
    doc = {"pods": [{"pod": 'a"b\\c\nd\x1b[2J', "netns": 1, "retransmits": 2}], "cpus": []}
    text = exposition_text(doc)
    assert controls(text) == []
    assert 'pod="a\\"b\\\\c\\nd\\\\x1b[2J"' in text
    families = read_prometheus(text)
    assert [s.labels["pod"] for s in families["netprof_retransmits"]] == ['a"b\\c\nd\\x1b[2J']


def test_written_exports_are_inert(doc, tmp_path):
    for path in write_all(doc, tmp_path / "out"):
        assert controls(path.read_text()) == [], path.name


def test_the_commands_print_nothing_a_terminal_acts_on(doc, tmp_path, capsys, monkeypatch):
    """`netprof fix --from` and `netprof export` on the hostile capture, through the CLI."""
    from profiler.cli import main

    monkeypatch.setenv("COLUMNS", "400")  # rich's width: no line of the plan wrapped

    capture = tmp_path / "hostile.json"
    capture.write_text(json.dumps(doc))
    assert main(["fix", "--from", str(capture), "--journal-dir", str(tmp_path / "journal")]) in (0, 1)
    out, err = capsys.readouterr()
    assert controls(out) == [] and controls(err) == []
    # --from re-plans from the capture's data with netprof's own detectors: the capture's
    # fix titles are not used, its pod names are (shown inert).
    assert "stop the parallel DNS A/AAAA race" in out and f"race{MARKUP}" not in out
    assert f"nplabf7af33-client{MARKUP}" in out
    for name in EXPORT_FORMATS:
        assert main(["export", str(capture), "--format", name]) == 0
        out, err = capsys.readouterr()
        assert controls(out) == [] and controls(err) == [], name


def test_fix_snippet_files_are_inert(doc, tmp_path):
    from profiler.fix.command import write_snippets

    findings = rank([Finding.from_json(f) for f in doc["findings"]])
    written = write_snippets(findings, tmp_path / "snippets")
    assert written
    for path in written:
        text = path.read_text()
        assert controls(text) == [], path.name
        assert MARKUP in text and text.count("\n") >= 1, "kept, lines and all"
