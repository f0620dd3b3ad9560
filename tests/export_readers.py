"""Independent readers of netprof's export files, for the tests: they know the formats from
their specifications, not from netprof's writers.

- folded stacks: the format flamegraph.pl's and inferno's collapse step produce and their
  flame graph step reads, one `frame;frame;… count` per line;
- speedscope: a JSON Schema written from speedscope's own type definitions
  (src/lib/file-format-spec.ts, FileFormat.File), plus the rules its importer enforces
  (samples.length == weights.length, frame indices in range);
- CSV: the csv module; Prometheus: prometheus_client.parser.
"""
from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter

import jsonschema

_FOLDED_LINE = re.compile(r"^(?P<stack>.*\S) (?P<count>[1-9][0-9]*)$")


class FormatError(AssertionError):
    pass


def parse_folded(text: str) -> Counter[tuple[str, ...]]:
    """Every line `frame;…;frame count`: at least one frame, none empty or padded, count a
    positive integer. Returns stack → count; the same stack twice is an error (a writer must
    merge them)."""
    stacks: Counter[tuple[str, ...]] = Counter()
    if text and not text.endswith("\n"):
        raise FormatError("the last line is not terminated")
    for number, line in enumerate(text.splitlines(), 1):
        match = _FOLDED_LINE.match(line)
        if match is None:
            raise FormatError(f"line {number}: not `frames count`: {line!r}")
        frames = tuple(match["stack"].split(";"))
        for frame in frames:
            if not frame or frame != frame.strip():
                raise FormatError(f"line {number}: empty or padded frame in {line!r}")
        if frames in stacks:
            raise FormatError(f"line {number}: stack repeated: {line!r}")
        stacks[frames] = int(match["count"])
    return stacks


# FileFormat.File and its parts, transcribed from speedscope's file-format-spec.ts.
_VALUE_UNIT = {"enum": ["none", "nanoseconds", "microseconds", "milliseconds", "seconds", "bytes"]}
SPEEDSCOPE_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["$schema", "shared", "profiles"],
    "properties": {
        "$schema": {"const": "https://www.speedscope.app/file-format-schema.json"},
        "version": {"type": "string"},
        "exporter": {"type": "string"},
        "name": {"type": "string"},
        "activeProfileIndex": {"type": "integer", "minimum": 0},
        "shared": {
            "type": "object",
            "required": ["frames"],
            "properties": {
                "frames": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name"],
                        "properties": {
                            "name": {"type": "string"},
                            "file": {"type": "string"},
                            "line": {"type": "number"},
                            "col": {"type": "number"},
                        },
                    },
                },
            },
        },
        "profiles": {
            "type": "array",
            "items": {"oneOf": [{"$ref": "#/$defs/sampled"}, {"$ref": "#/$defs/evented"}]},
        },
    },
    "$defs": {
        "sampled": {
            "type": "object",
            "required": ["type", "name", "unit", "startValue", "endValue", "samples", "weights"],
            "properties": {
                "type": {"const": "sampled"},
                "name": {"type": "string"},
                "unit": _VALUE_UNIT,
                "startValue": {"type": "number"},
                "endValue": {"type": "number"},
                "samples": {"type": "array", "items": {"type": "array", "items": {"type": "integer", "minimum": 0}}},
                "weights": {"type": "array", "items": {"type": "number", "minimum": 0}},
            },
        },
        "evented": {
            "type": "object",
            "required": ["type", "name", "unit", "startValue", "endValue", "events"],
            "properties": {
                "type": {"const": "evented"},
                "name": {"type": "string"},
                "unit": _VALUE_UNIT,
                "startValue": {"type": "number"},
                "endValue": {"type": "number"},
                "events": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["type", "at", "frame"],
                        "properties": {"type": {"enum": ["O", "C"]}, "at": {"type": "number"},
                                       "frame": {"type": "integer", "minimum": 0}},
                    },
                },
            },
        },
    },
}


def read_speedscope(text: str) -> dict[str, Counter[tuple[str, ...]]]:
    """Validate a speedscope file; returns profile name → (stack of frame names → weight)."""
    document = json.loads(text)
    jsonschema.validate(document, SPEEDSCOPE_SCHEMA)
    frames = [frame["name"] for frame in document["shared"]["frames"]]
    if "activeProfileIndex" in document and not document["activeProfileIndex"] < len(document["profiles"]):
        raise FormatError("activeProfileIndex points past the profiles")
    profiles: dict[str, Counter[tuple[str, ...]]] = {}
    for profile in document["profiles"]:
        if profile["type"] != "sampled":
            raise FormatError("netprof writes sampled profiles only")
        if len(profile["samples"]) != len(profile["weights"]):
            raise FormatError(f"{profile['name']}: samples and weights differ in length")
        if profile["endValue"] < profile["startValue"]:
            raise FormatError(f"{profile['name']}: endValue before startValue")
        stacks: Counter[tuple[str, ...]] = Counter()
        for sample, weight in zip(profile["samples"], profile["weights"]):
            if any(index >= len(frames) for index in sample):
                raise FormatError(f"{profile['name']}: frame index out of range in {sample}")
            stacks[tuple(frames[index] for index in sample)] += weight
        if sum(profile["weights"]) != profile["endValue"] - profile["startValue"]:
            raise FormatError(f"{profile['name']}: weights do not add up to endValue - startValue")
        if profile["name"] in profiles:
            raise FormatError(f"profile {profile['name']!r} twice")
        profiles[profile["name"]] = stacks
    return profiles


def read_csv(text: str) -> list[dict[str, str]]:
    reader = csv.DictReader(io.StringIO(text, newline=""))
    rows = list(reader)
    for number, row in enumerate(rows, 2):
        if None in row or None in row.values():
            raise FormatError(f"CSV row {number} has the wrong number of fields")
    return rows


def read_prometheus(text: str) -> dict[str, list]:
    """Family name → samples (name, labels, value), through prometheus_client's parser."""
    from prometheus_client.parser import text_string_to_metric_families

    families: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        if family.name in families:
            raise FormatError(f"family {family.name} twice")
        families[family.name] = list(family.samples)
    return families


def sample_value(families: dict[str, list], sample_name: str, **labels: str) -> float:
    """The one sample of that name whose labels include `labels`."""
    family = sample_name.removesuffix("_total").removesuffix("_bucket").removesuffix("_count").removesuffix("_sum")
    matches = [s for s in families.get(family, []) if s.name == sample_name
               and all(s.labels.get(k) == v for k, v in labels.items())]
    if len(matches) != 1:
        raise FormatError(f"{len(matches)} samples {sample_name} {labels}")
    return matches[0].value


def of_kind(folded: dict, kind: str) -> dict:
    """The folded stacks of one kind of event ("drops" or "retransmits"): the reason frame,
    second on every path, is TCP_RETRANSMIT exactly for retransmits."""
    return {frames: n for frames, n in folded.items() if (frames[1] == "TCP_RETRANSMIT") == (kind == "retransmits")}
