"""Property-based fuzzing of a capture file's way through netprof (issue 12).

Documents are made from real captures (the recorded TUI fixtures and the export tests'
sample) by breaking them: wrong types, NaN/huge/negative numbers, missing keys, deep
nesting, and hostile strings (ESC sequences, OSC 52, C1 controls, bidi overrides, path
traversal, line breaks, Rich markup) in every string field. Each goes through the loader,
then, if the loader takes it, through every consumer: the report, the fix planner (plan,
dry run, snippet files), every export format and the TUI (model and detail renderers).

The properties: the loader answers with a one-line NetprofError or a clean document; no
consumer raises; no output holds ESC or another C0/C1 control character (a line break is
fine); the fix planner writes nothing outside its --out directory.

Deterministic (derandomized) and bounded for CI; NETPROF_FUZZ_EXAMPLES=2000 runs longer.
"""
from __future__ import annotations

import copy
import io
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rich.console import Console

from profiler.capture_file import load_capture
from profiler.errors import NetprofError
from profiler.exports import EXPORT_FORMATS, render as render_export
from profiler.fix.command import replan, run_fix
from profiler.report import render as render_report
from tests.unit.test_export_formats import sample_capture
from tui.model import build_model
from tui.screens.cpu import render_cpu
from tui.screens.finding import render_finding
from tui.screens.pod import render_pod
from tui.screens.probes import render_probes
from tui.widgets.header import fit_segments, header_segments

FIXTURES = Path(__file__).parents[1] / "tui" / "fixtures"
BASES: list[dict[str, Any]] = [json.loads(path.read_text()) for path in sorted(FIXTURES.glob("*.json"))]
BASES.append(sample_capture().to_json())

FUZZ = settings(
    max_examples=int(os.environ.get("NETPROF_FUZZ_EXAMPLES", "25")),
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

HOSTILE_STRINGS = (
    "\x1b[2J\x1b[H",                     # clear the screen
    "\x1b]52;c;cm0gLXJmIH4K\x07",         # OSC 52: write the clipboard
    "\x1b]0;owned\x07",                  # window title
    "\x1b[6n",                           # ask the terminal to answer on stdin
    "\x9b31mred",                        # C1 CSI
    "\x85next\x8dline",                  # C1 NEL, RI
    "\u202eevil\u202c",                  # bidi override
    "zero\u200bwidth\ufeff",
    "../../../../etc/profile.d/evil",
    "/etc/passwd",
    "line\nbreak\rcarriage",
    "nul\x00byte\x7fdel\x08bs\ttab",
    "[bold red]markup[/]",
    "[/]",
    "[link=file:///etc/shadow]x[/link]",
    '"quoted\\" {braces} %s %n',
    "pod;with,separators=and\"quotes",
    "x" * 1000,
    "",
)
# Fields whose shape the schema fixes (enums, IP addresses, CPU lists): a hostile string
# there only makes the loader refuse the whole document, which the mutation tests cover.
# Everywhere else a hostile string is valid data and must reach the consumers inert.
SHAPED_FIELDS = frozenset({
    "schema", "kind", "severity", "scope", "family", "saddr", "daddr",
    "cpus_online", "local_cpus", "affinity", "effective_affinity", "rps_cpus", "xps_cpus",
})
# Objects whose keys are data (drop reasons, counter and sysctl names), not field names.
DATA_KEYED = frozenset({"drops", "netstat", "conntrack", "softnet", "sysctls", "states", "evidence",
                        "lost_events", "ignored_events", "softirq", "bpf_stats"})
DEEP = "__netprof_fuzz_deep__"

hostile_text = st.one_of(
    st.sampled_from(HOSTILE_STRINGS),
    st.text(st.characters(min_codepoint=0, max_codepoint=0x30FF), max_size=40),
    st.tuples(st.sampled_from(HOSTILE_STRINGS), st.sampled_from(HOSTILE_STRINGS)).map("".join),
)
wrong_value = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2 ** 80), max_value=2 ** 80),
    st.sampled_from([float("nan"), float("inf"), -float("inf"), -1, -0.5, 1e308, 2 ** 64 + 1, 0.1]),
    hostile_text,
    st.lists(st.integers(min_value=-5, max_value=5), max_size=3),
    st.dictionaries(hostile_text, st.integers(min_value=-5, max_value=5), max_size=3),
    st.just({}), st.just([]), st.just(DEEP),
)


# ------------------------------------------------------------------------------ documents


def _paths(value: Any, where: tuple = ()) -> Iterator[tuple]:
    yield where
    if isinstance(value, dict):
        for key, item in value.items():
            yield from _paths(item, (*where, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _paths(item, (*where, index))


def _parent(doc: Any, where: tuple) -> Any:
    for part in where[:-1]:
        doc = doc[part]
    return doc


def broken_document(draw: Callable) -> str:
    """A real capture with 1-4 random fields replaced, deleted or renamed; as JSON text.
    (Drawn step by step, so a failing example prints as a few small draws, not a document.)"""
    doc = copy.deepcopy(BASES[draw(st.integers(min_value=0, max_value=len(BASES) - 1))])
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        where = draw(st.sampled_from([p for p in _paths(doc) if p]))
        parent = _parent(doc, where)
        action = draw(st.sampled_from(["replace", "replace", "delete", "rename"]))
        if action == "replace":
            parent[where[-1]] = draw(wrong_value)
        elif action == "delete":
            del parent[where[-1]]
        elif isinstance(parent, dict):
            parent[draw(hostile_text)] = parent.pop(where[-1])
    return _to_text(doc, draw(st.sampled_from([40, 1000, 100_000])))


def poison_strings(doc: Any, strings: list[str]) -> Any:
    """`doc` with strings[i % len] in every string field (and data key) whose shape the schema
    leaves free: still a valid capture, so every consumer sees them."""
    counter = iter(range(10 ** 9))

    def poison(value: Any, key: Any = None) -> Any:
        if isinstance(value, dict):
            out = {}
            for name, item in value.items():
                new_name = name
                if key in DATA_KEYED:
                    n = next(counter)
                    new_name = f"{strings[n % len(strings)]}{n}"  # unique, so no key is lost
                out[new_name] = poison(item, name)
            return out
        if isinstance(value, list):
            return [poison(item, key) for item in value]
        if isinstance(value, str) and key not in SHAPED_FIELDS:
            text = strings[next(counter) % len(strings)]
            return text or "\x1b[0m" if key == "frames" else text  # a stack frame is never empty
        return value

    return poison(doc)


def hostile_document(draw: Callable) -> str:
    base = BASES[draw(st.integers(min_value=0, max_value=len(BASES) - 1))]
    return _to_text(poison_strings(base, draw(st.lists(hostile_text, min_size=1, max_size=8))), 0)


def _to_text(doc: Any, depth: int) -> str:
    text = json.dumps(doc)  # NaN/Infinity written as such, as a foreign tool might
    return text.replace(json.dumps(DEEP), "[" * depth + "]" * depth)


# ------------------------------------------------------------------------------ consumers


def _console() -> Console:
    # No colour, not a terminal: Rich adds no escape codes of its own, so any in the text
    # came from the capture.
    return Console(file=io.StringIO(), width=120, color_system=None, force_terminal=False, legacy_windows=False)


def _printed(renderables: list[Any]) -> str:
    console = _console()
    for renderable in renderables:
        console.print(renderable)
    return console.file.getvalue()


def consume(doc: dict[str, Any], workdir: Path) -> dict[str, str]:
    """Every consumer of a loaded capture; what each printed or wrote, by name."""
    outputs: dict[str, str] = {"report": _printed([render_report(doc)])}

    console = _console()
    out_dir = workdir / "out"
    run_fix(capture=doc, apply=False, do_rollback=False, journal_dir=workdir / "journal", out_dir=out_dir,
            only=None, console=console, findings=replan(doc))
    outputs["fix"] = console.file.getvalue()
    for path in sorted(out_dir.iterdir()) if out_dir.exists() else ():
        outputs[f"fix snippet {path.name}"] = path.read_text()

    for name in (*EXPORT_FORMATS, "capture"):
        outputs[f"export {name}"] = render_export(doc, name)

    model = build_model(doc, mode="replay", sequence=1)
    # As the app calls them: the probes screen renders the model's document.
    screens: list[Any] = [fit_segments(header_segments(model.header, False, None), 120),
                          render_probes(dict(model.document))]
    for row in model.findings:
        screens += render_finding(row.data)
    for pod in model.pods:
        screens += render_pod(model, pod.netns)
    for cpu in model.cpus:
        screens += render_cpu(model, cpu.cpu)
    outputs["tui"] = _printed(screens)
    return outputs


def _controls(text: str) -> list[str]:
    return sorted({repr(ch) for ch in text if (ord(ch) < 0x20 and ch != "\n") or 0x7F <= ord(ch) <= 0x9F})


def check_capture_text(text: str) -> dict[str, str] | None:
    """The properties, for one capture file's text. None: the loader refused it (properly)."""
    with tempfile.TemporaryDirectory(prefix="netprof-fuzz-") as tmp:
        workdir = Path(tmp)
        path = workdir / "cap.json"
        path.write_text(text, errors="surrogatepass")
        try:
            doc = load_capture(path)
        except NetprofError as exc:
            message = str(exc)
            assert "\n" not in message and not _controls(message), message
            return None
        outputs = consume(doc, workdir)
        # Nothing written but the capture itself and the snippets inside out/.
        written = {p for p in workdir.rglob("*") if p.is_file()} - {path}
        assert all(p.parent == workdir / "out" for p in written), written
    leaks = {name: _controls(output) for name, output in outputs.items() if _controls(output)}
    assert not leaks, f"control characters reach the output: {leaks}"
    return outputs


# ------------------------------------------------------------------------------ the properties


@FUZZ
@given(st.data())
def test_broken_captures_are_refused_in_one_line_or_handled(data):
    check_capture_text(broken_document(data.draw))


@FUZZ
@given(st.data())
def test_hostile_strings_in_every_field_never_reach_an_output_raw(data):
    check_capture_text(hostile_document(data.draw))


@pytest.mark.parametrize("base", range(len(BASES)))
def test_the_hostile_documents_are_valid_captures_so_the_consumers_run(base):
    # Without this, a loader that refused every hostile document would pass the test above.
    text = json.dumps(poison_strings(BASES[base], list(HOSTILE_STRINGS)))
    assert "\\u001b]52" in text
    outputs = check_capture_text(text)
    assert outputs is not None and set(outputs) >= {"report", "fix", "tui", *(f"export {f}" for f in EXPORT_FORMATS)}


def test_recorded_captures_pass_every_consumer():
    for base in BASES:
        assert check_capture_text(json.dumps(base)) is not None
