"""Models that arrive while the dashboard is closing are dropped, not shown on a screen
whose widgets are already gone (CI once failed on this: a live model landed mid-teardown and
`#header` no longer existed)."""
from __future__ import annotations

import asyncio
import threading
import time
from typing import Callable

from tui.app import NetprofApp
from tui.model import build_model

from .conftest import load

ROUNDS = 12


class FloodFeed:
    """A live feed with no pause between models: a new one is always waiting, so one is
    handed to the app at whatever moment the app is closing."""

    mode = "live"
    interval_s = 1.0

    def __init__(self, document: dict):
        self.model = build_model(document, mode="live", sequence=1, updated_monotonic_s=time.monotonic())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.notified = 0

    def forget_node_context(self) -> None:
        pass

    def start(self, notify: Callable[[], None]) -> None:
        def run() -> None:
            while not self._stop.is_set():
                notify()
                self.notified += 1
                time.sleep(0.0005)

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()

    def take(self):
        return self.model

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def test_models_arriving_during_shutdown_are_dropped():
    document = load("busy")

    async def one_round(pause_s: float) -> int:
        feed = FloodFeed(document)
        app = NetprofApp(feed)
        try:
            async with app.run_test(size=(160, 48)) as pilot:
                await pilot.pause(pause_s)
                shown = app.models_shown
        finally:
            feed.stop()
        return shown

    # Different pauses land the shutdown at different points of a model's handling.
    shown = [asyncio.run(one_round(0.01 * (i % 4))) for i in range(ROUNDS)]
    assert all(n >= 1 for n in shown), shown
