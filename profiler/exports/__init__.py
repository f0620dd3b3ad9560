"""Files a capture is exported to. `write_all` is what `netprof profile --output DIR` and the
TUI's export key both call, so the two always write the same set."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path


def atomic_write_text(path: Path, text: str) -> None:
    """Write beside the target and rename over it: a reader never sees half a file, and an
    interrupted export leaves the previous file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_all(doc: dict, out_dir: Path) -> list[Path]:
    """Every export of one capture (its profile JSON) into out_dir; returns the paths written."""
    capture_path = Path(out_dir) / "capture.json"
    atomic_write_text(capture_path, json.dumps(doc, indent=2) + "\n")
    return [capture_path]
