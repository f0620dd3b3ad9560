"""`netprof` / `netprof tui`: the live dashboard (or a saved capture, --replay).

The app owns no data logic: a Feed (tui/feed.py) produces DashboardModels off the UI thread,
the app takes the newest one when told, and hands it to the screen on top.
"""
from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping
from pathlib import Path

from textual.app import App
from textual.binding import Binding
from textual.message import Message

from profiler.exports import write_all
from profiler.fix.journal import AppliedEvent, latest_apply
from profiler.inert import inert

from .feed import Feed
from .model import BaselineView, DashboardModel, baseline_view
from .screens.base import ModelScreen
from .screens.help import HelpScreen
from .screens.main import MainScreen
from .style import set_monochrome

# The header says "no new sample" once the newest model is this many intervals old.
STALE_INTERVALS = 3


class ModelReady(Message):
    """Posted by the feed's thread: a new model is in the mailbox."""


def default_export_base(environ: Mapping[str, str] = os.environ) -> Path:
    """Where `e` writes without --export-dir: netprof's folder in the user's data directory
    (XDG), not the current directory, which is often a checkout or /."""
    data_home = environ.get("XDG_DATA_HOME") or ""
    base = Path(data_home) if data_home.startswith("/") else Path(environ.get("HOME") or "/root") / ".local" / "share"
    return base / "netprof" / "exports"


def export_directory(base: Path, hostname: str, now: float | None = None) -> Path:
    """A new directory per export: netprof-<host>-<YYYYmmdd-HHMMSS>[-n]."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now))
    safe_host = "".join(c if c.isalnum() or c in "-_." else "_" for c in hostname) or "node"
    candidate = base / f"netprof-{safe_host}-{stamp}"
    number = 2
    while candidate.exists():
        candidate = base / f"netprof-{safe_host}-{stamp}-{number}"
        number += 1
    return candidate


class NetprofApp(App):
    CSS_PATH = "app.tcss"
    TITLE = "netprof"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("ctrl+c", "quit", "quit", show=False, priority=True),
        Binding("question_mark", "help", "help"),
        Binding("e", "export", "export"),
    ]

    def __init__(self, feed: Feed, export_dir: Path | None = None, journal_dir: Path | None = None):
        super().__init__()
        self.feed = feed
        self.export_dir = export_dir
        self.model: DashboardModel | None = None
        self.paused = False
        self.exports: list[list[Path]] = []  # what each export wrote, newest last
        self.models_shown = 0
        # `b`: the window document the screen showed then, what later models are compared to.
        self.baseline_document: dict | None = None
        self.baseline_marked_at = 0.0
        self.baseline_reason = "marked"
        self.baseline: BaselineView | None = None
        # `netprof fix --apply` elsewhere shows up here as an event: the screen before it
        # becomes the baseline, so every table can show what the fix changed (`d`).
        self.journal_dir = journal_dir
        self.started_wall = time.time()
        self.fix_events: list[AppliedEvent] = []
        set_monochrome(self.no_color)

    def on_mount(self) -> None:
        self.push_screen(MainScreen())
        self.feed.start(self._tell_new_model)
        if self.feed.mode == "live":
            self.set_interval(1.0, self._check_stale)
        if self.journal_dir is not None:
            self.set_interval(2.0, self.check_fix_journal)

    def _tell_new_model(self) -> None:
        # Runs on the feed's thread. post_message is thread-safe and returns at once.
        self.post_message(ModelReady())

    def on_model_ready(self, message: ModelReady) -> None:
        if self.closing:
            return
        if self.paused:
            return  # the mailbox keeps the newest; resume takes it
        model = self.feed.take()
        if model is not None:
            self.show_model(model)

    def show_model(self, model: DashboardModel) -> None:
        self.model = model
        self.models_shown += 1
        if self.baseline_document is not None:
            self.baseline = baseline_view(self.baseline_document, model.document, self.baseline_marked_at,
                                          self.baseline_reason)
        screen = self.screen
        if isinstance(screen, ModelScreen):
            screen.show_model(model)
        # The main screen under a detail view keeps its tables current too, so Esc shows now.
        main = self._main_screen()
        if main is not None and main is not screen:
            main.show_model(model)

    def _main_screen(self) -> MainScreen | None:
        return next((s for s in self.screen_stack if isinstance(s, MainScreen)), None)

    @property
    def closing(self) -> bool:
        """Shutting down: the screens' widgets may already be gone. Textual's test harness
        closes the app from another task while its message loop still runs, so a model or
        timer can arrive mid-teardown."""
        return not self.is_running

    def _check_stale(self) -> None:
        if self.closing:
            return
        interval = self.feed.interval_s or 1.0
        age = time.monotonic() - self.model.updated_monotonic_s if self.model else None
        stale = age if age is not None and age > STALE_INTERVALS * interval and not self.paused else None
        for screen in self.screen_stack:
            if hasattr(screen, "set_stale"):
                screen.set_stale(stale)

    def toggle_pause(self) -> None:
        self.paused = not self.paused
        for screen in self.screen_stack:
            if hasattr(screen, "set_paused"):
                screen.set_paused(self.paused)
        if not self.paused:
            model = self.feed.take()
            if model is not None:
                self.show_model(model)
        self.notify("paused: the display is frozen, sampling goes on (p resumes)" if self.paused
                    else "resumed", timeout=2)

    def check_fix_journal(self) -> None:
        """A new apply in the fix journal since this dashboard started: an event on the
        timeline, and the baseline is the screen as it was when netprof noticed."""
        if self.closing:
            return
        event = latest_apply(self.journal_dir)
        if event is None or event.applied_at < self.started_wall:
            return
        if self.fix_events and self.fix_events[-1].apply_id == event.apply_id:
            return
        self.fix_events.append(event)
        self.feed.forget_node_context()  # the fix changed the node: the next analysis reads it
        when = time.strftime("%H:%M:%S", time.localtime(event.applied_at))
        self.notify(f"{len(event.changes)} change(s): " + "; ".join(inert(c) for c in event.changes[:3]),
                    title=f"fix applied at {when}", timeout=8, markup=False)
        if self.model is not None:
            self.mark_baseline(reason="fix applied", at=event.applied_at)

    def mark_baseline(self, reason: str = "marked", at: float | None = None) -> None:
        if self.model is None:
            self.notify("nothing captured yet", severity="warning")
            return
        self.baseline_document = dict(self.model.document)
        self.baseline_marked_at = time.time() if at is None else at
        self.baseline_reason = reason
        if reason == "marked":
            self.notify("baseline marked: d shows every table as the change since", timeout=4)
        self.show_model(self.model)

    def clear_baseline(self) -> None:
        self.baseline_document = None
        self.baseline = None
        if self.model is not None:
            self.show_model(self.model)

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_export(self) -> None:
        if self.model is None:
            self.notify("nothing captured yet", severity="warning")
            return
        document = dict(self.model.document)
        hostname = str((document.get("node") or {}).get("hostname") or socket.gethostname())
        out_dir = export_directory(self.export_dir or default_export_base(), hostname)
        self.run_worker(lambda: self._export(document, out_dir), thread=True, group="export",
                        exit_on_error=False)

    def _export(self, document: dict, out_dir: Path) -> None:
        try:
            # Exports name pods and flows: a folder netprof makes is its owner's only.
            out_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            written = write_all(document, out_dir)
        except OSError as exc:
            self.call_from_thread(self.notify, f"export failed: {exc}", severity="error", timeout=8)
            return
        self.call_from_thread(self._exported, out_dir, written)

    def _exported(self, out_dir: Path, written: list[Path]) -> None:
        self.exports.append(written)
        names = ", ".join(path.name for path in written)
        # The full path: the default folder is not where the user started netprof.
        self.notify(f"{inert(out_dir)}/\n{names}", title=f"exported {len(written)} file(s)", timeout=8, markup=False)

    async def action_quit(self) -> None:
        self.exit()

    def on_unmount(self) -> None:
        self.feed.stop()
