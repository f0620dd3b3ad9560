"""SVG snapshots of the main screens at 80×24 and 160×48 (tests/tui/snapshots/).

After a deliberate change of the look: `NETPROF_UPDATE_SNAPSHOTS=1 pytest tests/tui/test_snapshots.py`,
then look at the new SVGs before committing them.

(pytest-textual-snapshot does the same, but it pins syrupy 4.8, which pins pytest < 9; a
small comparison here keeps the project's pytest free.)
"""
from __future__ import annotations

import pytest

from tui.app import NetprofApp
from tui.feed import ReplayFeed

pytestmark = pytest.mark.usefixtures("utc")

SMALL = (80, 24)
LARGE = (160, 48)


def app_over(document: dict) -> NetprofApp:
    return NetprofApp(ReplayFeed(document))


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "160x48"])
def test_main(snapshot, busy, size):
    snapshot(app_over(busy), size=size)


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "160x48"])
def test_finding(snapshot, busy, size):
    # The listen overflow: evidence, an app-scope fix with its code snippet.
    snapshot(app_over(busy), press=["1", "down", "down", "down", "enter"], size=size)


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "160x48"])
def test_pod(snapshot, busy, size):
    server = next(str(p["netns"]) for p in busy["pods"] if p["pod"] == "nplab58ede0-server")

    async def open_server(pilot):
        await pilot.press("2")
        table = pilot.app.screen.query_one("#pods")
        table.move_cursor(row=table.get_row_index(server))
        await pilot.press("enter")

    snapshot(app_over(busy), run_before=open_server, size=size)


@pytest.mark.parametrize("size", [SMALL, LARGE], ids=["80x24", "160x48"])
def test_cpu(snapshot, busy, size):
    snapshot(app_over(busy), press=["3", "enter"], size=size)


def test_cpus_view(snapshot, busy):
    snapshot(app_over(busy), press=["v"], size=SMALL)


def test_help(snapshot, busy):
    snapshot(app_over(busy), press=["question_mark"], size=SMALL)


def test_quiet_node(snapshot, quiet):
    snapshot(app_over(quiet), size=SMALL)


def test_drops_with_a_warning(snapshot, drops):
    snapshot(app_over(drops), size=LARGE)


def test_no_colour(snapshot, busy, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")
    snapshot(app_over(busy), size=SMALL)
