"""The dashboard driven headless with Pilot over recorded captures: what the screen shows."""
from __future__ import annotations

import asyncio
import io
import json
import stat

import pytest
from pathlib import Path
from typing import Awaitable, Callable

from rich.console import Console
from textual.pilot import Pilot

from tui.app import NetprofApp, default_export_base, export_directory
from tui.feed import ReplayFeed
from tui.screens.cpu import CpuScreen
from tui.screens.finding import FindingScreen
from tui.screens.help import KEYMAP, HelpScreen
from tui.screens.pod import PodScreen
from tui.screens.probes import ProbesScreen
from tui.widgets.tables import PodsTable

DOCS = Path(__file__).resolve().parents[2] / "docs" / "tui.md"


def screen_text(app: NetprofApp) -> str:
    """The screen as plain text, the way export_screenshot sees it."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), force_terminal=True, color_system=None,
                      record=True, legacy_windows=False, safe_box=False)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()


def drive(document: dict, steps: Callable[[NetprofApp, Pilot], Awaitable[None]],
          size: tuple[int, int] = (80, 24), export_dir: Path | None = None) -> NetprofApp:
    async def main() -> NetprofApp:
        app = NetprofApp(ReplayFeed(document), export_dir=export_dir)
        async with app.run_test(size=size, notifications=True) as pilot:
            await pilot.pause()
            await steps(app, pilot)
        return app

    return asyncio.run(main())


async def export_and_wait(app: NetprofApp, pilot: Pilot) -> None:
    """`e`, then until the export's worker thread has handed back what it wrote."""
    await pilot.press("e")
    await app.workers.wait_for_complete()
    for _ in range(50):
        if app.exports:
            break
        await pilot.pause(0.02)


def pod_names(app: NetprofApp) -> list[str]:
    table = app.screen.query_one("#pods", PodsTable)
    return [table.get_row_at(i)[0].sort for i in range(table.row_count)]


def test_findings_appear_ranked_with_severity(busy):
    async def steps(app, pilot):
        text = screen_text(app)
        assert "REPLAY" in text and "vm" in text and "probes 10/12" in text
        assert "Findings (5, capture)" in text
        assert text.count("CRIT") == 5
        assert "conntrack insert failures" in text
        lines = [line for line in text.splitlines() if "CRIT" in line]
        assert "CPU 0" in lines[-1]  # lowest score last, as the capture ranked them
        # Pods named by a critical finding carry the mark, readable without colour.
        assert any(line.lstrip("│ ").startswith("‼ nplab9d1ca8-lossy") for line in text.splitlines())

    drive(busy, steps)


def test_no_findings_says_so(quiet):
    async def steps(app, pilot):
        text = screen_text(app)
        assert "Findings (0, capture)" in text
        assert "no findings: nothing on this node stands out" in text
        await pilot.press("enter")  # the placeholder row opens nothing
        assert not isinstance(app.screen, FindingScreen)

    drive(quiet, steps)


def test_sorting_cycles_columns_and_reverses(busy):
    async def steps(app, pilot):
        names = pod_names(app)
        # Severity first: the pods critical findings name, busiest first (client 1.3k
        # conntrack failures/s, lossy, server), then the receiver, whose 351k drops/s no
        # finding calls trouble, ahead of the rest.
        assert names[:4] == ["nplabf7af33-client", "nplab9d1ca8-lossy", "nplab58ede0-server",
                             "nplab1e95de-receiver"]
        await pilot.press("s")  # retransmits
        assert pod_names(app)[0] == "nplab9d1ca8-lossy"
        assert "sort retrans/s" in screen_text(app)
        for _ in range(4):  # drops, listen, conntrack, name
            await pilot.press("s")
        names = pod_names(app)
        assert names == sorted(names)
        assert "sort name" in screen_text(app)
        await pilot.press("S")
        assert pod_names(app) == sorted(names, reverse=True)

    drive(busy, steps)


def test_filter_by_name_and_clear(busy):
    async def steps(app, pilot):
        await pilot.press("slash")
        await pilot.press(*"steady")
        assert pod_names(app) == ["nplab9d1ca8-steady1", "nplab9d1ca8-steady2"]
        await pilot.press("enter")
        text = screen_text(app)
        assert "Pods (2 of 21)" in text and "filter “steady”" in text
        assert "nplab1e95de-receiver" not in text
        await pilot.press("escape")
        assert len(pod_names(app)) == 21
        assert "Pods (21)" in screen_text(app)

    drive(busy, steps)


def test_finding_detail_shows_evidence_and_fixes_with_scope(busy):
    async def steps(app, pilot):
        await pilot.press("1", "down", "down", "down", "enter")
        assert isinstance(app.screen, FindingScreen)
        text = screen_text(app)
        assert "listen-overflow" in text and "nplab58ede0-server" in text
        assert "accept_queue_limit" in text and "64" in text
        assert "[app] listen() with a backlog of 128" in text
        assert "scope: in the application" in text
        await pilot.press("y")
        assert "listen(fd, 128);" in app.clipboard
        await pilot.press("n")  # the next finding: CPU 0's imbalance, a node-scope fix
        text = screen_text(app)
        assert "softirq-imbalance" in text and "[node]" in text
        await pilot.press("escape")
        assert not isinstance(app.screen, FindingScreen)

    drive(busy, steps, size=(100, 60))


def test_node_fix_commands_are_shown_for_copying(busy):
    async def steps(app, pilot):
        await pilot.press("1", "down", "enter")  # conntrack table full
        text = screen_text(app)
        assert "$ sysctl -w net.netfilter.nf_conntrack_max=524288" in text
        assert "netprof fix --apply` makes this change" in text
        await pilot.press("y")
        assert app.clipboard.startswith("# [node] raise nf_conntrack_max")
        assert "persist:" in app.clipboard

    drive(busy, steps, size=(120, 50))


def test_pod_detail_shows_listeners_drops_and_flows(busy):
    async def steps(app, pilot):
        await pilot.press("2")
        table = app.screen.query_one("#pods", PodsTable)
        table.move_cursor(row=table.get_row_index(next(
            str(p["netns"]) for p in busy["pods"] if p["pod"] == "nplab58ede0-server")))
        await pilot.press("enter")
        assert isinstance(app.screen, PodScreen)
        text = screen_text(app)
        assert "nplab58ede0-server" in text
        assert "0.0.0.0:8080" in text and "65/64 FULL" in text
        assert "TCP_LISTEN_OVERFLOW" in text and "tcp_v4_rcv+0x91" in text
        assert "TcpExt.ListenOverflows" in text
        await pilot.press("escape")
        await pilot.press("2")
        table = app.screen.query_one("#pods", PodsTable)
        table.move_cursor(row=table.get_row_index(next(
            str(p["netns"]) for p in busy["pods"] if p["pod"] == "nplab9d1ca8-lossy")))
        await pilot.press("enter")
        text = screen_text(app)
        assert "198.18.0.3:44488 → 198.18.0.2:5201" in text and "231" in text

    drive(busy, steps, size=(120, 70))


def test_cpu_view_and_detail_histogram(busy):
    async def steps(app, pilot):
        await pilot.press("v")
        text = screen_text(app)
        assert "CPUs (2)" in text and "80%" in text and "eth0 tx-0" in text
        await pilot.press("enter")
        assert isinstance(app.screen, CpuScreen)
        text = screen_text(app)
        assert "NET_RX (capture): 66538 runs" in text
        assert "66µs–131µs   58060" in text  # the histogram's biggest bucket
        await pilot.press("end")
        assert "eth0 tx-0 (IRQ 39)" in screen_text(app) and "pinned here" in screen_text(app)
        await pilot.press("escape", "v")
        assert "Pods (21)" in screen_text(app)

    drive(busy, steps, size=(100, 60))


def test_cpu_view_of_a_quiet_tier_window_says_not_measured(busy):
    document = {**busy, "tier": {"mode": "quiet", "current": "quiet", "full_s": 0.0,
                                 "quiet_s": busy["duration_s"], "switches": []}}

    async def steps(app, pilot):
        await pilot.press("v")
        text = screen_text(app)
        row = next(line for line in text.splitlines() if "eth0 tx-0" in line)
        assert "–" in row and "quiet tier" in row and "80%" not in row
        await pilot.press("enter")
        text = screen_text(app)
        assert "not measured" in text and "runs," not in text and "budget used up" not in text

    drive(document, steps, size=(100, 60))


def test_wide_terminal_shows_pods_and_cpus_together(busy):
    async def steps(app, pilot):
        text = screen_text(app)
        assert "Pods (21)" in text and "CPUs (2)" in text
        assert "trend" in text and "sqz/s" in text and "eth0 tx-0 (39)" in text

    drive(busy, steps, size=(160, 48))


def test_export_writes_the_capture(busy, tmp_path):
    async def steps(app, pilot):
        await export_and_wait(app, pilot)
        assert app.exports, "nothing exported"
        await pilot.pause(0.1)
        text = screen_text(app)
        assert "exported" in text and "capture.json" in text

    app = drive(busy, steps, export_dir=tmp_path)
    written = app.exports[0]
    assert written and all(path.is_file() for path in written)
    capture = next(path for path in written if path.name == "capture.json")
    assert capture.parent.parent == tmp_path and capture.parent.name.startswith("netprof-vm-")
    assert json.loads(capture.read_text()) == busy


def test_export_defaults_to_netprofs_data_folder_not_the_current_directory(busy, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.chdir(tmp_path)

    told: list[str] = []

    async def steps(app, pilot):
        notify = app.notify
        app.notify = lambda message, **kwargs: (told.append(str(message)), notify(message, **kwargs))[1]
        await export_and_wait(app, pilot)
        await pilot.pause(0.1)
        # The user is told the whole path: it is not where they started netprof.
        assert any(message.startswith(str(home / ".local/share/netprof/exports/netprof-vm-")) for message in told)

    app = drive(busy, steps, size=(160, 48))
    capture = next(path for path in app.exports[0] if path.name == "capture.json")
    base = home / ".local" / "share" / "netprof" / "exports"
    assert capture.parent.parent == base
    assert stat.S_IMODE(base.stat().st_mode) == 0o700
    assert [p.name for p in tmp_path.iterdir()] == ["home"], "nothing written in the current directory"
    assert default_export_base({"XDG_DATA_HOME": "/srv/data", "HOME": "/root"}) == Path("/srv/data/netprof/exports")
    assert default_export_base({"XDG_DATA_HOME": "relative", "HOME": "/root"}) == Path("/root/.local/share/netprof/exports")


def test_export_directories_never_collide(tmp_path):
    first = export_directory(tmp_path, "node/1", now=0)
    first.mkdir()
    second = export_directory(tmp_path, "node/1", now=0)
    assert first.name.startswith("netprof-node_1-") and second.name == first.name + "-2"


def test_help_lists_every_key_and_docs_agree(busy):
    async def steps(app, pilot):
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        for key, _ in KEYMAP:
            assert key in text
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)

    drive(busy, steps, size=(120, 40))
    docs = DOCS.read_text()
    missing = [key for key, _ in KEYMAP if f"`{key}`" not in docs]
    assert not missing, f"docs/tui.md does not document {missing}"


def test_help_shows_how_to_quit_on_a_small_terminal(busy):
    async def steps(app, pilot):
        await pilot.press("question_mark")
        text = screen_text(app)
        assert "quit (Ctrl-C too)" in text and "this help" in text

    drive(busy, steps, size=(80, 24))


def test_probes_panel_says_what_is_off_and_why(busy):
    async def steps(app, pilot):
        await pilot.press("i")
        assert isinstance(app.screen, ProbesScreen)
        text = screen_text(app)
        assert "listen_syn_path" in text and "OFF" in text and "CONFIG_KPROBES off" in text

    drive(busy, steps, size=(120, 40))


def test_pause_freezes_the_display(busy):
    async def steps(app, pilot):
        await pilot.press("p")
        assert app.paused and "PAUSED" in screen_text(app)
        await pilot.press("p")
        assert not app.paused and "REPLAY" in screen_text(app)

    drive(busy, steps)


def test_quit(busy):
    async def steps(app, pilot):
        await pilot.press("q")

    app = drive(busy, steps)
    assert app.return_code == 0


def test_usable_without_colour(busy, monkeypatch):
    monkeypatch.setenv("NO_COLOR", "1")

    async def steps(app, pilot):
        assert app.no_color
        svg = app.export_screenshot()
        text = screen_text(app)
        # Severity and the pods a finding names are in the text, not only in colour.
        assert text.count("CRIT") == 5 and "‼ nplab9d1ca8-lossy" in text
        assert "#ff0000" not in svg.lower()

    drive(busy, steps)


def test_a_drops_capture_with_a_warning(drops):
    async def steps(app, pilot):
        text = screen_text(app)
        assert "WARN" in text and "socket receive buffers" in text
        assert "SOCKET_RCVBUFF" in text

    drive(drops, steps, size=(160, 48))


def test_a_new_model_updates_cells_in_place(busy):
    """No flicker: a new interval rewrites the cells that changed; rows are never cleared,
    and the cursor stays on the pod it was on even when the order changes."""
    import copy

    from tui.model import build_model

    async def steps(app, pilot):
        table = app.screen.query_one("#pods", PodsTable)
        await pilot.press("2")
        lossy = next(str(p["netns"]) for p in busy["pods"] if p["pod"] == "nplab9d1ca8-lossy")
        table.move_cursor(row=table.get_row_index(lossy))
        cleared, added = [], []
        table.clear = lambda *a, **k: cleared.append(1)
        original_add = table.add_row
        table.add_row = lambda *a, **k: (added.append(k.get("key")), original_add(*a, **k))[1]
        later = copy.deepcopy(busy)
        for pod in later["pods"]:
            if pod["pod"] == "nplab9d1ca8-lossy":
                pod["retransmits"] = 6_000_000  # now the most troubled pod: it moves to the top
        app.show_model(build_model(later, sequence=2))
        await pilot.pause()
        assert cleared == [] and added == []
        assert table.get_row_index(lossy) == 0
        assert table.cursor_row == 0 and table.selected_key == lossy
        assert table.get_cell(lossy, "retrans").plain == "993k"

    drive(busy, steps)


def test_baseline_then_deltas_show_what_changed_since(busy):
    """b marks the screen as the baseline; after a model where one quiet pod starts dropping,
    the header says what moved beyond noise and d turns the tables into changes."""
    from copy import deepcopy

    from tui.model import build_model

    later = deepcopy(busy)
    quiet = next(p for p in later["pods"] if not p["drops"] and not p["retransmits"])
    quiet["drops"] = {"SOCKET_RCVBUFF": 6000}
    rate = 6000 / later["duration_s"]  # ≈993/s over the 6.04 s capture

    async def steps(app, pilot):
        await pilot.press("d")  # no baseline yet: nothing to compare, tables unchanged
        assert "Δ since baseline" not in screen_text(app)
        await pilot.press("b")
        await pilot.pause()
        assert app.baseline is not None and app.baseline.worse == 0 and app.baseline.better == 0
        assert "no change beyond noise" in screen_text(app)
        app.show_model(build_model(later, mode="replay", sequence=2))
        await pilot.pause()
        assert app.baseline.worse >= 1
        assert app.baseline.headline.startswith("worse:") and quiet["pod"] in app.baseline.headline
        assert "worse" in screen_text(app)
        await pilot.press("d")
        await pilot.pause()
        table = app.screen.query_one("#pods", PodsTable)

        def drops_cell(netns: int):
            # The table's rows hold every column's cell, in PodsTable.COLUMNS order.
            cells = dict(table._rows)[str(netns)]
            return cells[PodsTable.COLUMNS.index("drops")]

        assert drops_cell(quiet["netns"]).sort == pytest.approx(rate)
        assert drops_cell(quiet["netns"]).plain == f"+{rate:.0f}"
        assert "Δ since baseline" in screen_text(app)
        # A pod whose drops did not change shows no change, whatever its rate.
        busy_pod = max(later["pods"], key=lambda p: sum(p["drops"].values()))
        assert drops_cell(busy_pod["netns"]).sort == pytest.approx(0.0) and drops_cell(busy_pod["netns"]).plain == "·"
        await pilot.press("d")
        await pilot.pause()
        assert drops_cell(busy_pod["netns"]).sort > 1000  # the rate itself again
        await pilot.press("B")
        await pilot.pause()
        assert app.baseline is None and "Δ" not in screen_text(app).split("\n")[0]

    drive(busy, steps, size=(160, 48))


def test_a_fix_applied_elsewhere_becomes_an_event_with_its_baseline(busy, tmp_path):
    """`netprof fix --apply` writes its journal; the dashboard notices the new apply, says
    so, and makes the screen of that moment the baseline, so `d` shows what the fix changed."""
    from copy import deepcopy

    from profiler.analysis.findings import Change
    from profiler.fix import apply_changes, current_identity, rollback
    from tui.model import build_model

    target = Path("/proc/sys/net/core/netdev_budget")
    before = target.read_text().strip()
    journal = tmp_path / "journal"
    shown: list[str] = []

    async def steps(app, pilot):
        notify = app.notify
        app.notify = lambda message, **kwargs: (shown.append(f"{kwargs.get('title')}: {message}"),
                                                notify(message, **kwargs))[1]
        app.check_fix_journal()
        assert app.fix_events == [] and app.baseline is None, "no journal yet: no event"
        report = apply_changes([Change("sysctl", "net.core.netdev_budget", str(int(before) + 1), None, before)],
                               current_identity(), journal)
        try:
            assert report.ok, report
            app.check_fix_journal()
            await pilot.pause()
            (event,) = app.fix_events
            assert event.apply_id == report.apply_id
            assert len(event.changes) == 1 and "net.core.netdev_budget" in event.changes[0]
            assert any(line.startswith("fix applied at") and "netdev_budget" in line for line in shown)
            assert app.baseline is not None and app.baseline.reason == "fix applied"
            assert app.baseline.marked_at == pytest.approx(event.applied_at)
            assert "Δ fix applied" in screen_text(app)
            app.check_fix_journal()
            assert len(app.fix_events) == 1, "the same apply is one event"
            later = deepcopy(busy)
            app.show_model(build_model(later, mode="replay", sequence=2))
            await pilot.pause()
            assert app.baseline.reason == "fix applied"
        finally:
            rollback(journal)
            assert target.read_text().strip() == before

    import os

    from tests.conftest import skip_or_fail

    if os.geteuid() != 0:
        skip_or_fail("not root: the test applies (and rolls back) a real sysctl")

    async def main():
        app = NetprofApp(ReplayFeed(busy), journal_dir=journal)
        async with app.run_test(size=(160, 48), notifications=True) as pilot:
            await pilot.pause()
            await steps(app, pilot)

    asyncio.run(main())


def test_a_new_model_with_the_same_titles_repaints_no_table_whole(busy, monkeypatch):
    """Textual repaints a whole widget on any border-title assignment, even of the same
    text: the dashboard set six titles each second, so every table line was styled anew."""
    from textual.widget import Widget
    from tui.widgets.table import LiveTable

    whole: list[str] = []
    original = Widget.refresh

    def counting(self, *regions, **kwargs):
        if isinstance(self, LiveTable) and not regions:
            whole.append(type(self).__name__)
        return original(self, *regions, **kwargs)

    async def steps(app, pilot):
        monkeypatch.setattr(Widget, "refresh", counting)
        app.show_model(app.model)
        await pilot.pause()
        assert whole == [], whole

    drive(busy, steps, size=(160, 50))
