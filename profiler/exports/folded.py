"""Kernel stacks of a capture as folded stacks, the input of flamegraph.pl and inferno:

    pod;reason;frame_outer;…;frame_inner count

one line per (pod, reason, stack), `count` events (drops or retransmits) with that stack.
`reason` is the drop reason (SOCKET_RCVBUFF, TCP_LISTEN_OVERFLOW, …) or TCP_RETRANSMIT, so
a flame graph's first two levels say who and why, and the rest where in the kernel.

A frame never contains ';' or a line break, and is never empty: pod labels come from pod
names and netns names, which netprof does not control, so those characters are replaced.
"""
from __future__ import annotations

import re

_UNSAFE = re.compile(r"[;\r\n\t\x00-\x1f\x7f]")
EMPTY_FRAME = "[unknown]"


def safe_frame(text: str) -> str:
    cleaned = _UNSAFE.sub("_", str(text)).strip()
    return cleaned or EMPTY_FRAME


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
