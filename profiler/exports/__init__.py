"""Files a capture is exported to. `write_all` is what `netprof profile --output DIR` and the
TUI's export key both call, so the two always write the same set.

Every export is a pure function of the profile JSON (`Capture.to_json()`), so a saved
capture converts to the same files later (`netprof export capture.json --format …`).
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from ..inert import inert_tree


# Captures and exports name pods and their flows (who talks to whom, what fails): private to
# whoever wrote them, root on a node. A caller that must share a file says so (serve's textfile).
PRIVATE_FILE_MODE = 0o600


def atomic_write_text(path: Path, text: str, mode: int = PRIVATE_FILE_MODE) -> None:
    """Write beside the target and rename over it: a reader never sees half a file, and an
    interrupted export leaves the previous file intact. The file gets exactly `mode`
    (fchmod, so the umask can neither widen nor narrow it); replacing a file replaces its
    mode too."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            os.fchmod(handle.fileno(), mode)
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def capture_json(doc: dict) -> str:
    # json.dumps alone leaves no raw control in the file (it escapes them), but `jq -r` or any
    # reader would decode an ESC back: strings are made inert first. Line breaks stay (JSON
    # escapes them), so a capture converts again to the same exports.
    return json.dumps(inert_tree(doc, multiline_fields=None), indent=2) + "\n"


def _formats() -> dict[str, tuple[str, Callable[[dict], str]]]:
    # Imported here: the Prometheus renderer needs prometheus-client, the others do not.
    from .flamegraph_svg import flamegraph_svg
    from .folded import folded_text
    from .histograms import histograms_csv, histograms_json
    from .prometheus import exposition_text
    from .speedscope import speedscope_json

    return {
        "capture": ("capture.json", capture_json),
        "folded": ("stacks.folded", folded_text),
        "speedscope": ("speedscope.json", speedscope_json),
        "flamegraph-svg": ("flamegraph.svg", flamegraph_svg),
        "histograms-json": ("histograms.json", histograms_json),
        "histograms-csv": ("histograms.csv", histograms_csv),
        "prometheus": ("metrics.prom", exposition_text),
    }


# `netprof export --format` choices (capture.json itself is not a conversion).
EXPORT_FORMATS = ("folded", "speedscope", "flamegraph-svg", "histograms-json", "histograms-csv", "prometheus")


def render(doc: dict, format_name: str) -> str:
    """One export of a capture as text; format_name is one of EXPORT_FORMATS or "capture"."""
    formats = _formats()
    if format_name not in formats:
        raise ValueError(f"unknown export format {format_name!r} (known: {', '.join(formats)})")
    return formats[format_name][1](doc)


def write_all(doc: dict, out_dir: Path) -> list[Path]:
    """Every export of one capture (its profile JSON) into out_dir; returns the paths written.

    capture.json, stacks.folded, speedscope.json, histograms.json, histograms.csv and
    metrics.prom, each written atomically. All are rendered before the first is written, so
    a failure leaves the directory as it was."""
    out_dir = Path(out_dir)
    rendered = [(out_dir / filename, render_text(doc)) for filename, render_text in _formats().values()]
    for path, text in rendered:
        atomic_write_text(path, text)
    return [path for path, _ in rendered]
