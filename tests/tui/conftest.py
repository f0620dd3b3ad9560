"""Fixtures for the dashboard tests: recorded captures (see fixtures/record.py) and SVG
snapshots of the screen."""
from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path
from typing import Awaitable, Callable, Iterable

import pytest
from textual.app import App
from textual.pilot import Pilot

FIXTURES = Path(__file__).parent / "fixtures"
SNAPSHOTS = Path(__file__).parent / "snapshots"
# NETPROF_UPDATE_SNAPSHOTS=1 rewrites the snapshots from the current screens: after a
# deliberate change of the look, then look at them (e.g. open the SVGs in a browser).
UPDATE_SNAPSHOTS = os.environ.get("NETPROF_UPDATE_SNAPSHOTS") == "1"


def load(name: str) -> dict:
    return json.loads((FIXTURES / f"{name}.json").read_text())


@pytest.fixture
def busy() -> dict:
    """Three lab scenarios at once (and other labs of the machine): 5 critical findings."""
    return load("busy")


@pytest.fixture
def drops() -> dict:
    """rcvbuf + CPU backlog + conntrack-full drops: critical findings and one warning."""
    return load("drops")


@pytest.fixture
def quiet() -> dict:
    """Two pods talking without a fault: no finding."""
    return load("quiet")


@pytest.fixture
def utc(monkeypatch):
    """The header prints the capture's start in local time: pin it for snapshots."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def svg_screenshot(app: App, size: tuple[int, int], press: Iterable[str] = (),
                   run_before: Callable[[Pilot], Awaitable[None]] | None = None) -> str:
    """The screen after `run_before` and the key presses, as Textual exports it."""

    async def main() -> str:
        async with app.run_test(size=size) as pilot:
            await pilot.pause()
            if run_before is not None:
                await run_before(pilot)
            await pilot.press(*press)
            await pilot.wait_for_scheduled_animations()
            await pilot.pause()
            return app.export_screenshot(title="netprof", simplify=True)

    # Rich names the SVG's classes after a hash of the content: equal screens, equal text.
    return re.sub(r"\bterminal-\d+-", "terminal-", asyncio.run(main()))


@pytest.fixture
def snapshot(request, tmp_path):
    """Compare the screen with tests/tui/snapshots/<test id>.svg (written on the first run
    only under NETPROF_UPDATE_SNAPSHOTS=1, so CI never accepts a screen nobody looked at)."""

    def compare(app: App, size: tuple[int, int], press: Iterable[str] = (),
                run_before: Callable[[Pilot], Awaitable[None]] | None = None) -> None:
        name = re.sub(r"[^\w.-]+", "_", request.node.name).strip("_")
        expected_path = SNAPSHOTS / f"{name}.svg"
        actual = svg_screenshot(app, size, press, run_before)
        if UPDATE_SNAPSHOTS:
            SNAPSHOTS.mkdir(exist_ok=True)
            expected_path.write_text(actual)
            return
        if not expected_path.exists():
            pytest.fail(f"no snapshot {expected_path}: run with NETPROF_UPDATE_SNAPSHOTS=1 and look at it")
        if actual != expected_path.read_text():
            actual_path = tmp_path / f"{name}.actual.svg"
            actual_path.write_text(actual)
            pytest.fail(f"the screen differs from {expected_path}; now it is {actual_path} "
                        "(if the change is intended: NETPROF_UPDATE_SNAPSHOTS=1)", pytrace=False)

    return compare
