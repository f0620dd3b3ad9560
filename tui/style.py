"""Styles that carry meaning. In colour, severity is red / yellow / cyan; under NO_COLOR
Textual turns colours into greys, and a dark red on a dark background all but disappears,
so the monochrome styles use weight and reverse video instead. The app picks once at start."""
from __future__ import annotations

COLOUR = {"critical": "bold red", "warning": "bold yellow", "info": "cyan", "alarm": "bold red",
          "caution": "yellow", "ok": "green"}
MONOCHROME = {"critical": "bold reverse", "warning": "bold underline", "info": "italic", "alarm": "bold reverse",
              "caution": "bold", "ok": ""}

_styles = COLOUR


def set_monochrome(monochrome: bool) -> None:
    global _styles
    _styles = MONOCHROME if monochrome else COLOUR


def style(meaning: str) -> str:
    """The style for a severity ("critical", "warning", "info") or for "alarm" (a number
    that is bad), "caution" (something missing) or "ok"."""
    return _styles.get(meaning, "")
