"""Read a saved capture, which is input from anywhere: the one loader every consumer uses.

`netprof fix --from`, `netprof export` and `netprof tui --replay` read capture files a
colleague, a ticket or a chat may have handed over. Before any of them sees the document it
is checked, in this order, so each check may rely on the ones before:

1. size: at most a limit (default DEFAULT_MAX_CAPTURE_MB, `--max-capture-mb` or the
   NETPROF_MAX_CAPTURE_MB environment variable), told before reading when the file says so;
2. JSON proper: no NaN/Infinity (Python's json takes them by default), no number too large
   for a float, no nesting deeper than any capture has, only valid Unicode strings;
3. the project's own JSON Schema (profiler/schemas/profile-v1.json) with `jsonschema`:
   every field a consumer reads has its type, counters are non-negative integers;
4. what the schema cannot say: finding kinds are the ones netprof's detectors produce.

Any failure is one NetprofError line naming the first bad field as a JSON path.
"""
from __future__ import annotations

import json
import math
import os
import sys
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, BinaryIO

from .findings import FINDING_KINDS
from .errors import NetprofError
from .inert import inert

SCHEMA_ID = "netprof.profile/v1"
# The kernel maps bound what one capture holds: at their capacity (4096 pods, 16384 flows,
# 16384 stacks of 30 frames) a capture is 23 MiB, and loads and checks in 5.5 s with 130 MB
# of memory (measured here, 2 shared CPUs). 64 MiB leaves room for long captures whose flow
# map churned, and still loads in about half a minute (a 53 MiB one: 25 s, 330 MB). The
# 174 MB capture of issue 12 took 37 s and 1.7 GB to export; such a file is refused unless
# the operator raises the limit on purpose.
DEFAULT_MAX_CAPTURE_MB = 64.0
MAX_CAPTURE_ENV = "NETPROF_MAX_CAPTURE_MB"
# A capture nests 7 levels (findings[].fixes[].changes[].key); evidence adds a few. Anything
# far deeper is not a capture, and must not reach a recursive consumer (or jsonschema).
MAX_NESTING = 32
# Kernel counters are u64; nothing netprof writes is larger, and beyond this float() of the
# value (every rate and percentage) loses meaning or overflows.
MAX_NUMBER = 2 ** 64
# Loading shows progress on a terminal above this size (smaller ones load in well under a second).
PROGRESS_ABOVE_BYTES = 4 << 20
_CHUNK = 1 << 20


class CaptureError(NetprofError):
    """A capture file that cannot be used: unreadable, too large, or not a valid capture."""


def max_capture_bytes(limit_mb: float | None = None, environ: dict[str, str] | None = None) -> int:
    """The size limit: the command's flag, else NETPROF_MAX_CAPTURE_MB, else the default."""
    environ = os.environ if environ is None else environ
    source = "--max-capture-mb"
    if limit_mb is None and environ.get(MAX_CAPTURE_ENV):
        source = MAX_CAPTURE_ENV
        try:
            limit_mb = float(environ[MAX_CAPTURE_ENV])
        except ValueError:
            raise CaptureError(f"{MAX_CAPTURE_ENV}={inert(environ[MAX_CAPTURE_ENV], 40)} is not a number of MiB") from None
    if limit_mb is None:
        limit_mb = DEFAULT_MAX_CAPTURE_MB
    if not math.isfinite(limit_mb) or limit_mb <= 0:
        raise CaptureError(f"{source} must be a positive number of MiB, got {limit_mb!r}")
    return int(limit_mb * (1 << 20))


# ------------------------------------------------------------------------------------ reading


class _Progress:
    """`netprof: loading cap.json: 40%` on stderr, rewritten in place; silent off a terminal."""

    def __init__(self, name: str, total: int, stream: Any = None):
        self.stream = stream if stream is not None else sys.stderr
        self.name = inert(name, 80)
        self.total = total
        self.enabled = total > PROGRESS_ABOVE_BYTES and _isatty(self.stream)

    def show(self, what: str) -> None:
        if self.enabled:
            self.stream.write(f"\rnetprof: {what} {self.name}\x1b[K")
            self.stream.flush()

    def done(self) -> None:
        if self.enabled:
            self.stream.write("\r\x1b[K")
            self.stream.flush()


def _isatty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _too_large(path: Path, size: int | None, limit: int) -> CaptureError:
    found = f" ({size / (1 << 20):.0f} MiB)" if size is not None else ""
    return CaptureError(
        f"{inert(path)} is larger than {limit / (1 << 20):g} MiB{found}, the limit for a capture; "
        f"raise it with --max-capture-mb or {MAX_CAPTURE_ENV} if the file is one you trust to load")


def _read_bounded(handle: BinaryIO, path: Path, limit: int, progress: _Progress) -> bytes:
    chunks: list[bytes] = []
    read = 0
    while chunk := handle.read(_CHUNK):
        read += len(chunk)
        if read > limit:
            raise _too_large(path, None, limit)
        chunks.append(chunk)
        if progress.total:
            progress.show(f"reading {min(100, 100 * read // progress.total)}% of")
    return b"".join(chunks)


def read_capture_bytes(path: Path, limit: int, progress_stream: Any = None) -> tuple[bytes, _Progress]:
    try:
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size if os.path.isfile(path) else None
            if size is not None and size > limit:
                raise _too_large(path, size, limit)
            progress = _Progress(str(path), size or 0, progress_stream)
            return _read_bounded(handle, path, limit, progress), progress
    except FileNotFoundError:
        raise CaptureError(f"no such capture file: {inert(path)}") from None
    except IsADirectoryError:
        raise CaptureError(f"{inert(path)} is a directory, not a capture file") from None
    except OSError as exc:
        raise CaptureError(f"cannot read {inert(path)}: {exc.strerror or exc}") from None


# ------------------------------------------------------------------------------------ parsing


class _NotCaptureJson(ValueError):
    pass


def _no_constant(name: str) -> float:
    raise _NotCaptureJson(f"{name} is not a number a capture can hold")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotCaptureJson(f"{text[:40]} is too large for a number a capture can hold")
    return value


def parse_capture_json(data: bytes | str, name: str = "the capture") -> Any:
    """JSON text → Python value, refusing what Python's json would take and a capture never holds."""
    try:
        return json.loads(data, parse_constant=_no_constant, parse_float=_finite_float)
    except _NotCaptureJson as exc:
        raise CaptureError(f"{name} is not a valid capture: {exc}") from None
    except json.JSONDecodeError as exc:
        raise CaptureError(f"{name} is not JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}): "
                           "write it with `netprof profile --json` or `--output`") from None
    except RecursionError:
        raise CaptureError(f"{name} is not a valid capture: nested deeper than any capture") from None
    except (UnicodeDecodeError, ValueError) as exc:
        # ValueError: an integer of thousands of digits (int() refuses them), bad UTF-8.
        raise CaptureError(f"{name} is not a valid capture: {inert(str(exc), 120)}") from None


# ------------------------------------------------------------------------------------ checking


def json_path(parts: tuple[str | int, ...]) -> str:
    text = "$"
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part.isidentifier():
            text += f".{part}"
        else:
            text += f"[{json.dumps(part)}]"
    return inert(text, 160)


def _check_values(doc: Any) -> None:
    """Nesting, numbers and strings everywhere, without recursion (so any depth is a clean error)."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(doc, ())]
    while stack:
        value, where = stack.pop()
        if len(where) > MAX_NESTING:
            raise _Invalid(where, f"nested deeper than {MAX_NESTING} levels, which no capture is")
        if isinstance(value, dict):
            for key, item in value.items():
                _check_string(key, (*where, key))
                stack.append((item, (*where, key)))
        elif isinstance(value, list):
            stack.extend((item, (*where, index)) for index, item in enumerate(value))
        elif isinstance(value, str):
            _check_string(value, where)
        elif isinstance(value, bool) or value is None:
            continue
        elif isinstance(value, (int, float)):
            if not math.isfinite(value) or abs(value) > MAX_NUMBER:
                raise _Invalid(where, "a number beyond any counter (more than 2^64, or not finite)")


def _check_string(text: str, where: tuple[str | int, ...]) -> None:
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise _Invalid(where, "a string that is not valid Unicode (a lone surrogate)") from None


class _Invalid(Exception):
    def __init__(self, where: tuple[str | int, ...], what: str):
        super().__init__(f"{json_path(where)}: {what}")


@lru_cache(maxsize=1)
def _validator() -> Any:
    import jsonschema

    schema = json.loads((resources.files("profiler") / "schemas/profile-v1.json").read_text())
    # format_checker: flow and listener addresses are checked as IP addresses (they are quoted
    # in the commands a fix prints).
    return jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string",
            list: "an array", dict: "an object"}.get(type(value), type(value).__name__)


def _schema_message(error: Any, prefix: tuple[str | int, ...] = ()) -> str:
    """One short line for a jsonschema error: its own message may quote a huge instance."""
    where = json_path((*prefix, *error.absolute_path))
    kind, expected, value = error.validator, error.validator_value, error.instance
    if kind == "type":
        wanted = " or ".join(expected) if isinstance(expected, list) else expected
        return f"{where}: expected {wanted}, found {_type_name(value)}"
    if kind == "required":
        missing = [name for name in expected if isinstance(value, dict) and name not in value]
        return f"{where}: missing {inert(missing[0] if missing else expected, 60)!s}"
    if kind in ("minimum", "maximum"):
        return f"{where}: {inert(repr(value), 40)} is {'below' if kind == 'minimum' else 'above'} {expected}"
    if kind in ("enum", "const"):
        allowed = expected if kind == "enum" else [expected]
        return f"{where}: {inert(repr(value), 40)} is not one of {inert(', '.join(map(str, allowed)), 80)}"
    if kind == "anyOf" and isinstance(error.schema, dict) and error.schema.get("description"):
        return f"{where}: {inert(repr(value), 40)} is not {inert(error.schema['description'], 80)}"
    return f"{where}: {inert(error.message, 120)}"


# The arrays that make a capture large: checked item by item, so that a large capture shows
# how far the check is (jsonschema checks ~1 MB of capture a second) and the first bad item
# is the one named.
_ITEM_ARRAYS = ("pods", "flows", "cpus", "stacks", "drop_sites", "findings")
_PROGRESS_EVERY_ITEMS = 2000


def _first_schema_error(doc: dict[str, Any], progress: _Progress | None = None) -> str | None:
    import jsonschema

    validator = _validator()
    arrays = {name: doc[name] for name in _ITEM_ARRAYS if isinstance(doc.get(name), list)}
    errors = list(validator.iter_errors({**doc, **{name: [] for name in arrays}}))
    if errors:
        return _schema_message(jsonschema.exceptions.best_match(errors))
    total = sum(map(len, arrays.values())) or 1
    checked = 0
    for name, items in arrays.items():
        item_validator = validator.evolve(schema=validator.schema["properties"][name]["items"])
        for index, item in enumerate(items):
            errors = list(item_validator.iter_errors(item))
            if errors:
                return _schema_message(jsonschema.exceptions.best_match(errors), (name, index))
            checked += 1
            if progress is not None and checked % _PROGRESS_EVERY_ITEMS == 0:
                progress.show(f"checking {100 * checked // total}% of")
    return None


def validate_capture(doc: Any, name: str = "the capture", progress: _Progress | None = None) -> dict[str, Any]:
    """`doc` if it is a capture netprof can use; CaptureError naming the first bad field if not."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA_ID:
        raise CaptureError(f"{name} is not a netprof capture (schema {SCHEMA_ID})")
    try:
        _check_values(doc)
    except _Invalid as exc:
        raise CaptureError(f"{name} is not a valid capture: {exc}") from None
    problem = _first_schema_error(doc, progress)
    if problem is None:
        problem = _unknown_finding_kind(doc)
    if problem is not None:
        raise CaptureError(f"{name} is not a valid capture: {problem}")
    return doc


def _unknown_finding_kind(doc: dict[str, Any]) -> str | None:
    for index, finding in enumerate(doc["findings"]):
        if finding["kind"] not in FINDING_KINDS:
            return (f"{json_path(('findings', index, 'kind'))}: {inert(repr(finding['kind']), 60)} is not "
                    "a kind of finding netprof makes")
    return None


def load_capture(path: Path, limit_mb: float | None = None, progress_stream: Any = None) -> dict[str, Any]:
    """The capture at `path`, read within the size limit, parsed and validated."""
    path = Path(path)
    data, progress = read_capture_bytes(path, max_capture_bytes(limit_mb), progress_stream)
    try:
        progress.show("parsing")
        doc = parse_capture_json(data, inert(path))
        del data
        progress.show("checking")
        return validate_capture(doc, inert(path), progress)
    finally:
        progress.done()


