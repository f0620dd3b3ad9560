"""The flame-graph SVG: one graph per kind of event, counts that add up, hostile names inert,
and -- in a real headless browser -- the page's own zoom and search."""
from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import quote

import pytest

from profiler.exports import render
from profiler.exports.flamegraph_svg import WIDTH, flamegraph_svg
from tests.conftest import skip_or_fail

DROPS = Path(__file__).parents[1] / "tui" / "fixtures" / "drops.json"
SVG = "{http://www.w3.org/2000/svg}"
HOSTILE_POD = "evil\x1b]52;c;ZXZpbA==\x07<script>alert(1)</script>\u202e"


def capture_with_retransmits() -> dict:
    doc = json.loads(DROPS.read_text())
    doc["stacks"].append({"pod": HOSTILE_POD, "netns": 5, "reason": "TCP_RETRANSMIT",
                          "frames": ["tcp_write_timer", "tcp_retransmit_skb", "a&b<c>"], "count": 40})
    doc["stacks"].append({"pod": "web", "netns": 6, "reason": "TCP_RETRANSMIT",
                          "frames": ["tcp_write_timer", "tcp_retransmit_skb"], "count": 60})
    return doc


def sections(svg_text: str) -> dict[str, ET.Element]:
    root = ET.fromstring(svg_text)
    return {g.get("data-kind"): g for g in root.iter(f"{SVG}g") if g.get("class") == "section"}


def frames(section: ET.Element) -> list[ET.Element]:
    return [g for g in section.iter(f"{SVG}g") if g.get("class") == "f"]


def test_drops_and_retransmits_are_separate_graphs_with_their_own_totals():
    doc = capture_with_retransmits()
    by_kind = sections(flamegraph_svg(doc))
    assert set(by_kind) == {"drops", "retransmits"}
    drops = sum(s["count"] for s in doc["stacks"] if s["reason"] != "TCP_RETRANSMIT")
    assert int(by_kind["drops"].get("data-total")) == drops
    assert int(by_kind["retransmits"].get("data-total")) == 100
    for kind, section in by_kind.items():
        levels = {}
        for g in frames(section):
            levels.setdefault(int(g.get("data-level")), 0)
            levels[int(g.get("data-level"))] += int(g.get("data-count"))
        # The root holds everything; each pod level adds up to it.
        assert levels[0] == levels[1] == int(section.get("data-total"))
    title = by_kind["retransmits"].find(f"{SVG}text").text
    assert "100 retransmits" in title and "drops" not in title


def test_hostile_names_are_inert_text_never_markup_or_script():
    text = flamegraph_svg(capture_with_retransmits())
    root = ET.fromstring(text)            # still well-formed XML
    assert len(list(root.iter(f"{SVG}script"))) == 1
    assert "\x1b" not in text and "\x07" not in text and "\u202e" not in text
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "a&amp;b&lt;c&gt;" in text


def test_an_empty_capture_says_so():
    doc = json.loads(DROPS.read_text())
    doc["stacks"] = []
    text = flamegraph_svg(doc)
    assert sections(text) == {} and "No kernel stacks" in text


def test_export_format_is_registered():
    assert render(json.loads(DROPS.read_text()), "flamegraph-svg").startswith("<?xml")


# --- in a real browser ---------------------------------------------------------------------------

def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        skip_or_fail("chromium is not installed (./bootstrap.sh test installs it)")
    return path


def dump_dom(svg_path: Path, fragment: str) -> ET.Element:
    result = subprocess.run(
        [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
         f"file://{svg_path}#{quote(fragment)}"],
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return ET.fromstring(result.stdout)


def test_the_browser_runs_the_page_and_zooms_into_a_frame(tmp_path):
    svg_path = tmp_path / "flamegraph.svg"
    svg_path.write_text(flamegraph_svg(capture_with_retransmits()))
    root = dump_dom(svg_path, "zoom=tcp_retransmit_skb")
    drawn = [g for g in root.iter(f"{SVG}g") if g.get("class", "").split()[:1] == ["f"]]
    assert root.get("data-ready") == str(len(drawn)) and len(drawn) > 20
    retransmits = next(s for s in root.iter(f"{SVG}g") if s.get("data-kind") == "retransmits")
    assert retransmits.get("data-zoomed") == "tcp_retransmit_skb"
    by_name: dict[str, list[ET.Element]] = {}
    for g in retransmits.iter(f"{SVG}g"):
        if g.get("data-name"):
            by_name.setdefault(g.get("data-name"), []).append(g)
    # The first tcp_retransmit_skb (the bigger pod's: web, 60 of 100) now spans the whole
    # width; its ancestors are drawn full width, faded; the other pod's frames are hidden.
    zoomed = by_name["tcp_retransmit_skb"][0]
    assert zoomed.get("data-count") == "60"
    assert float(zoomed.find(f"{SVG}rect").get("width")) == pytest.approx(WIDTH)
    assert "ancestor" in by_name["all retransmits"][0].get("class")
    assert "ancestor" in by_name["web"][0].get("class")
    other_pod = next(g for g in retransmits.iter(f"{SVG}g")
                     if g.get("data-level") == "1" and g.get("data-count") == "40")
    assert "hidden" in other_pod.get("class")
    # Labels were fitted to the new widths by the page's script.
    assert zoomed.find(f"{SVG}text").text == "tcp_retransmit_skb"


def test_the_browser_search_reports_the_share_matched(tmp_path):
    doc = capture_with_retransmits()
    svg_path = tmp_path / "flamegraph.svg"
    svg_path.write_text(flamegraph_svg(doc))
    root = dump_dom(svg_path, "search=^udp_")
    drops = next(s for s in root.iter(f"{SVG}g") if s.get("data-kind") == "drops")
    drop_stacks = [s for s in doc["stacks"] if s["reason"] != "TCP_RETRANSMIT"]
    expected = sum(s["count"] for s in drop_stacks if any(re.match("^udp_", f) for f in s["frames"]))
    assert expected > 0
    total = sum(s["count"] for s in drop_stacks)
    assert float(drops.get("data-matched")) == pytest.approx(expected / total, abs=1e-5)
    assert any("match" in g.get("class", "") for g in drops.iter(f"{SVG}g"))
