"""Start the dashboard: open the feed first (so a start-up failure is the CLI's one-line
`netprof: …` message, not a traceback inside a half-drawn screen), then run the app."""
from __future__ import annotations

import sys
from pathlib import Path

from profiler.errors import NetprofError


def run_tui(replay: Path | None = None, interval_s: float = 1.0, window_s: float = 60.0,
            export_dir: Path | None = None, max_capture_mb: float | None = None, tier=None) -> int:
    """tier: profiler.detail_tier.TierSettings for a live session (None: the full tier)."""
    from .app import NetprofApp
    from .feed import LiveFeed, ReplayFeed

    if export_dir is not None and not export_dir.is_dir():
        raise NetprofError(f"--export-dir {export_dir} is not a directory")
    document = None
    if replay is not None:
        from profiler.capture_file import load_capture

        # Validated before the app starts (a bad file is one line, not a traceback in a
        # half-drawn screen); a large one shows its loading progress on the terminal.
        document = load_capture(replay, max_capture_mb)
    elif window_s < interval_s:
        raise NetprofError(f"--window ({window_s:g}s) must be at least --interval ({interval_s:g}s)")
    # Textual draws on stderr (stdout stays free for redirection) and reads keys from stdin.
    if not (sys.stdin.isatty() and sys.__stderr__.isatty()):
        raise NetprofError("the dashboard needs a terminal; for a report in a script or a pipe use "
                           "`netprof profile` (or `netprof profile --json`)")
    if document is not None:
        feed = ReplayFeed(document, replay)
    else:
        from profiler import live

        session = live.LiveSession(window_s=window_s, tier=tier)
        print("netprof: attaching probes…", file=sys.stderr, flush=True)
        session.start()  # NetprofError: not root, no BTF, nothing attachable
        feed = LiveFeed(session, interval_s)
    # Live: watch `netprof fix --apply`'s journal, so a fix shows up as an event with a baseline.
    journal_dir = None
    if document is None:
        from profiler.fix.journal import DEFAULT_JOURNAL_DIR

        journal_dir = DEFAULT_JOURNAL_DIR
    app = NetprofApp(feed, export_dir=export_dir, journal_dir=journal_dir)
    try:
        app.run()
    finally:
        feed.stop()
    return app.return_code or 0
