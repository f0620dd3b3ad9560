"""Kernel stacks of a capture as a speedscope file (https://www.speedscope.app), opened as is.

The file follows speedscope's file format (src/lib/file-format-spec.ts in its repository):
one shared frame table and "sampled" profiles whose samples are stacks of frame indices,
outermost first, each with a weight. Weights are event counts (unit "none").

Drops and retransmits are different events, never added up: each kind has its own profiles,
named after what their weights count ("drops: all pods", "retransmits: all pods"). For each
kind, the first profile has every stack under its pod and reason frames (the same paths as
stacks.folded); then one profile per pod, its stacks under their reason. Pods are ordered
busiest first, so speedscope opens on the whole node and the selector lists pods.
"""
from __future__ import annotations

import json

from .. import __version__
from .folded import EVENT_KINDS, safe_frame, stack_kind, stack_path

SPEEDSCOPE_SCHEMA = "https://www.speedscope.app/file-format-schema.json"


class _Frames:
    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.frames: list[dict] = []

    def __call__(self, name: str) -> int:
        found = self.index.get(name)
        if found is None:
            found = self.index[name] = len(self.frames)
            self.frames.append({"name": name})
        return found


def _profile(name: str, samples: list[list[int]], weights: list[int]) -> dict:
    return {
        "type": "sampled",
        "name": name,
        "unit": "none",
        "startValue": 0,
        "endValue": sum(weights),
        "samples": samples,
        "weights": weights,
    }


def _kind_profiles(kind: str, stacks: list[dict], frames: _Frames) -> list[dict]:
    all_samples = [[frames(f) for f in stack_path(s)] for s in stacks]
    profiles = [_profile(f"{kind}: all pods", all_samples, [int(s["count"]) for s in stacks])]
    per_pod: dict[str, list[dict]] = {}
    for stack in stacks:
        per_pod.setdefault(safe_frame(stack["pod"]), []).append(stack)
    for pod, pod_stacks in sorted(per_pod.items(), key=lambda item: (-sum(int(s["count"]) for s in item[1]), item[0])):
        samples = [[frames(f) for f in stack_path(s)[1:]] for s in pod_stacks]
        profiles.append(_profile(f"{kind}: {pod}", samples, [int(s["count"]) for s in pod_stacks]))
    return profiles


def speedscope_document(doc: dict, name: str = "netprof kernel stacks") -> dict:
    frames = _Frames()
    stacks = [s for s in doc.get("stacks", []) if int(s["count"]) > 0]
    profiles: list[dict] = []
    for kind in EVENT_KINDS:
        of_kind = [s for s in stacks if stack_kind(s) == kind]
        if of_kind:
            profiles += _kind_profiles(kind, of_kind, frames)
    if not profiles:
        # speedscope opens a file only with a profile in it: an empty one says "no stacks".
        profiles.append(_profile(f"{EVENT_KINDS[0]}: all pods", [], []))
    return {
        "$schema": SPEEDSCOPE_SCHEMA,
        "name": name,
        # In speedscope's published schema (file-format-schema.json), beside the spec's fields.
        "exporter": f"netprof {__version__}",
        "activeProfileIndex": 0,
        "shared": {"frames": frames.frames},
        "profiles": profiles,
    }


def speedscope_json(doc: dict) -> str:
    return json.dumps(speedscope_document(doc), separators=(",", ":")) + "\n"
