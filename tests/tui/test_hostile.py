"""`tui --replay` of a capture with terminal escapes and rich markup in every outside field
(tests/hostile.py), driven headless with Pilot: no screen, no clipboard copy and no export
holds a control character, and markup-looking names show as text."""
from __future__ import annotations

from tests.hostile import MARKUP, controls, hostile_capture
from tests.tui.test_app import drive, export_and_wait, screen_text
from tui.screens.cpu import CpuScreen
from tui.screens.finding import FindingScreen
from tui.screens.pod import PodScreen
from tui.screens.probes import ProbesScreen

SIZE = (160, 120)  # tall enough for the CPU screen to show its NAPI devices


def test_every_screen_of_a_hostile_capture_is_inert(tmp_path):
    doc = hostile_capture()
    server = next(p for p in doc["pods"] if p["pod"].startswith("nplab58ede0-server"))
    seen: dict[str, str] = {}

    async def steps(app, pilot):
        seen["main"] = screen_text(app)
        await pilot.press("1", "down", "down", "down", "enter")  # the listen overflow
        assert isinstance(app.screen, FindingScreen)
        seen["finding"] = screen_text(app)
        await pilot.press("y")
        seen["clipboard"] = app.clipboard
        await pilot.press("escape")
        for name, screen in (("pod", PodScreen(int(server["netns"]))), ("cpu", CpuScreen(0)),
                             ("probes", ProbesScreen())):
            await app.push_screen(screen)
            await pilot.pause()
            seen[name] = screen_text(app)
            app.pop_screen()
            await pilot.pause()
        await export_and_wait(app, pilot)

    app = drive(doc, steps, size=SIZE, export_dir=tmp_path)
    assert set(seen) == {"main", "finding", "clipboard", "pod", "cpu", "probes"}
    for name, text in seen.items():
        assert controls(text) == [], name
    # Names that look like markup are shown as they are, on every screen that names them.
    assert f"vm{MARKUP}" in seen["main"], "the hostname in the header"
    assert f"nplab9d1ca8-lossy{MARKUP}" in seen["main"], "a pod a finding names"
    assert f"nplab58ede0-server{MARKUP}" in seen["finding"] and MARKUP in seen["clipboard"]
    assert f"nplab58ede0-server{MARKUP}" in seen["pod"], "the pod a detail view is about"
    assert f"(no_device){MARKUP}" in seen["cpu"], "a NAPI device in a detail table"
    assert f"tracepoint:skb:kfree_skb{MARKUP}" in seen["probes"], "a BPF hook in the cost table"
    assert app.exports and all(controls(path.read_text()) == [] for path in app.exports[0])


def test_replay_in_a_real_terminal_sends_none_of_the_captures_escapes(tmp_path):
    """The bytes the real program writes to a pseudo-terminal: the capture's clipboard write,
    window title and C1 CSI never reach it as sequences, only as visible text."""
    import json

    from tests.tui.test_cli import NETPROF, Pty, plain

    capture = tmp_path / "hostile.json"
    capture.write_text(json.dumps(hostile_capture()))
    pty = Pty([*NETPROF, "tui", "--replay", str(capture)], size=(160, 48))
    try:
        drawn = ("Findings (5, capture)", "nplab9d1ca8-lossy", "export")
        assert pty.read_until(lambda out: all(part in plain(out) for part in drawn)), plain(pty.output)[-2000:]
        pty.send("q")
        assert pty.finish() == 0
    finally:
        pty.kill()
    for sequence in (b"\x1b]52;", b"\x1b]0;pwned", "\x9b".encode(), "\u202e".encode()):
        assert sequence not in pty.output, sequence
    assert f"vm{MARKUP}\\x1b[2J\\x1b]52;c;ZXZpbA==" in plain(pty.output), "shown, as text"
