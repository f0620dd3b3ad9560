"""Make text from outside netprof inert before a terminal, a file or an export sees it.

Pod names, netns names, container-runtime records, hostnames, kernel symbol names and every
string in a capture file (which may come from anyone) can carry control characters: ESC
sequences that clear the screen, set the window title or write the clipboard (OSC 52), C1
controls that some terminals honour as ESC, and Unicode format characters (bidi overrides,
zero-width joiners) that make a printed name read as something else. `inert` is the one
place that decides what is safe; every view calls it on outside text, and the fuzz tests
check that no ESC survives any of them.

Unsafe characters are not dropped but shown as escapes (`\\x1b`, `\\u202e`), so an operator
sees that a name was odd instead of a silently different name.
"""
from __future__ import annotations

import unicodedata

# Unicode categories that never belong in a label: controls (C0, DEL, C1), format characters
# (bidi overrides, zero-width), surrogates, private use, unassigned, line/paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_KEEP_MULTILINE = frozenset("\n")


def _escape(ch: str) -> str:
    code = ord(ch)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _safe_char(ch: str, multiline: bool) -> str:
    if ch == " " or (ch.isascii() and ch.isprintable()):
        return ch
    if multiline and ch in _KEEP_MULTILINE:
        return ch
    if ch == "\t":
        return " "
    if unicodedata.category(ch) in _UNSAFE_CATEGORIES:
        return _escape(ch)
    return ch


def inert(value: object, max_len: int | None = None, *, multiline: bool = False) -> str:
    """`value` as text no terminal or parser will act on: controls and format characters
    become visible escapes; `multiline` keeps line breaks (rationales, snippets). The
    result is cut to `max_len` characters (with a trailing `…`) when given."""
    text = value if isinstance(value, str) else str(value)
    if not (text.isascii() and text.isprintable()):
        text = "".join(_safe_char(ch, multiline) for ch in text)
    if max_len is not None and len(text) > max_len:
        text = text[: max(max_len - 1, 0)] + "…"
    return text


def is_inert(text: str, *, multiline: bool = False) -> bool:
    """True if `inert` would leave `text` as it is (no length limit)."""
    return inert(text, multiline=multiline) == text
