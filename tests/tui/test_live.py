"""The dashboard over the real kernel: a lossy lab pod appears in the pods table with its
retransmits, and the retransmit finding names it (by netns inode); its steady neighbours get
no such finding."""
from __future__ import annotations

import asyncio
import time

import pytest

from profiler.lab.scenarios import RetransmitScenario
from profiler.live import LiveSession
from tui.app import NetprofApp
from tui.feed import LiveFeed
from tui.widgets.tables import PodsTable

pytestmark = pytest.mark.usefixtures("bpf_ready", "lab_ready")

INTERVAL_S = 0.5
DEADLINE_S = 20.0


def test_live_dashboard_shows_the_lossy_pod_and_its_finding():
    scenario = RetransmitScenario()
    with scenario:
        lab = scenario.setup()
        lossy = lab.pods["lossy"].netns_inode
        steady = {lab.pods[name].netns_inode for name in ("steady1", "steady2")}
        session = LiveSession(window_s=30)
        session.start()
        feed = LiveFeed(session, INTERVAL_S)
        seen: dict[str, object] = {}

        async def main() -> None:
            app = NetprofApp(feed)
            async with app.run_test(size=(160, 48)) as pilot:
                scenario.start(4.0)
                deadline = time.monotonic() + DEADLINE_S
                while time.monotonic() < deadline and not ("row" in seen and "finding" in seen):
                    await pilot.pause(0.2)
                    model = app.model
                    if model is None:
                        continue
                    table = app.screen.query_one("#pods", PodsTable)
                    if str(lossy) in table.rows:
                        retransmits = table.get_cell(str(lossy), "retrans").sort
                        if retransmits and retransmits > 0:
                            seen["row"] = retransmits
                    # Other labs may run on the machine: find ours by netns inode, then the
                    # finding that names that pod's label.
                    label = next((p.name for p in model.pods if p.netns == lossy), None)
                    named = [f.data.get("pod") for f in model.findings if f.kind == "tcp-retransmits"]
                    if label is not None and label in named:
                        seen["finding"] = label
                        seen["steady_labels"] = {p.name for p in model.pods if p.netns in steady}
                        seen["all_retransmit_findings"] = named
                await asyncio.to_thread(scenario.wait)

        try:
            asyncio.run(main())
        finally:
            feed.stop()
    print(f"observed: {seen}")
    assert seen.get("row", 0) > 0, f"the lossy pod never showed retransmits: {seen}"
    assert "finding" in seen, f"no tcp-retransmits finding within {DEADLINE_S}s: {seen}"
    assert not set(seen["all_retransmit_findings"]) & seen["steady_labels"], seen
    assert feed.samples >= 2 and feed.analyses >= 1
