"""Kernel stacks of a capture as folded stacks, the input of flamegraph.pl and inferno:

    pod;reason;frame_outer;…;frame_inner count

one line per (pod, reason, stack), `count` events (drops or retransmits) with that stack.
`reason` is the drop reason (SOCKET_RCVBUFF, TCP_LISTEN_OVERFLOW, …) or TCP_RETRANSMIT, so
a flame graph's first two levels say who and why, and the rest where in the kernel.

A frame never contains ';' or a line break, and is never empty: pod labels come from pod
names and netns names, which netprof does not control, so those characters are replaced;
and, like all outside text, a frame is made inert (profiler/inert.py): no terminal control
reaches whoever `cat`s the file or a flame graph's SVG.
"""
from __future__ import annotations

import re

from ..inert import inert

# The folded format's own separators: a frame with one of them would split or end a line.
_SEPARATORS = re.compile(r"[;\r\n\t]")
EMPTY_FRAME = "[unknown]"


def safe_frame(text: str) -> str:
    cleaned = inert(_SEPARATORS.sub("_", str(text))).strip()
    return cleaned or EMPTY_FRAME


# Drops and retransmits are different events: graphs and profiles never add them up.
EVENT_KINDS = ("drops", "retransmits")
RETRANSMIT_REASON = "TCP_RETRANSMIT"


def stack_kind(stack: dict) -> str:
    """"retransmits" for a retransmit's stack, "drops" for a drop's (whatever its reason)."""
    return "retransmits" if stack.get("reason") == RETRANSMIT_REASON else "drops"


def stack_path(stack: dict) -> list[str]:
    """The frames of one capture `stacks[]` entry, pod and reason first, all made safe."""
    return [safe_frame(stack["pod"]), safe_frame(stack["reason"]), *(safe_frame(f) for f in stack["frames"])]


def folded_lines(doc: dict) -> list[str]:
    """One line per stack with a positive count; equal paths (after cleaning) are merged."""
    counts: dict[str, int] = {}
    for stack in doc.get("stacks", []):
        count = int(stack["count"])
        if count <= 0:
            continue
        path = ";".join(stack_path(stack))
        counts[path] = counts.get(path, 0) + count
    return [f"{path} {count}" for path, count in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def folded_text(doc: dict) -> str:
    lines = folded_lines(doc)
    return "\n".join(lines) + ("\n" if lines else "")
