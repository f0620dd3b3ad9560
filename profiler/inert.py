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
from collections.abc import Mapping
from typing import Any

# Unicode categories that never belong in a label: controls (C0, DEL, C1), format characters
# (bidi overrides, zero-width), surrogates, private use, unassigned, line/paragraph separators.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
_KEEP_MULTILINE = frozenset("\n")
# Fields of a capture whose text is several lines by design: a fix's reasoning and its
# snippet (YAML, code, a script). Every other string of a capture is one line.
MULTILINE_FIELDS = frozenset({"rationale", "snippet"})


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


def inert_tree(document: Any, multiline_fields: frozenset[str] | None = MULTILINE_FIELDS) -> Any:
    """A copy of a JSON-like document (a capture, or any part of one) with every string made
    inert, mapping keys included (drop reasons, counter names and evidence keys come from the
    capture too). Strings under a key in `multiline_fields` keep their line breaks, also
    inside lists under that key; None keeps them in every string (for a format that escapes
    line breaks itself). Numbers, booleans and None are kept; tuples become lists.

    Views call this once on the document they render, so a field added to the capture later
    is covered without anyone remembering it. Walked with an explicit stack: a hostile
    document's nesting depth cannot exhaust the interpreter's recursion limit here."""
    result: list[Any] = [None]
    # (value, the key it sits under, the container to put its copy in, the slot there)
    pending: list[tuple[Any, Any, Any, Any]] = [(document, None, result, 0)]

    def place(item: Any, field: Any, container: Any, slot: Any) -> None:
        # Strings and scalars in place; containers later. Most of a capture is numbers and
        # short names, and pushing each of them costs more than handling it here.
        if isinstance(item, str):
            container[slot] = item if item.isascii() and item.isprintable() else inert(
                item, multiline=multiline_fields is None or field in multiline_fields)
        elif isinstance(item, (Mapping, list, tuple)):
            pending.append((item, field, container, slot))
        else:
            container[slot] = item

    while pending:
        value, field, container, slot = pending.pop()
        if isinstance(value, Mapping):
            copy: dict[Any, Any] = {}
            container[slot] = copy
            for key, item in value.items():
                safe_key = key if not isinstance(key, str) or (key.isascii() and key.isprintable()) else inert(key)
                copy[safe_key] = None  # keeps the mapping's order; filled in by place()
                place(item, key, copy, safe_key)
        elif isinstance(value, (list, tuple)):
            items: list[Any] = [None] * len(value)
            container[slot] = items
            for index, item in enumerate(value):
                place(item, field, items, index)
        else:
            place(value, field, container, slot)
    return result[0]
