"""A capture with terminal escapes and markup in every field that carries outside text, and
the check every view's output must pass (tests/unit/test_hostile_views.py, tests/tui).

The capture is a recorded one (tests/tui/fixtures/busy.json) with the payload appended to
pod names (everywhere they appear), the hostname, NIC and NAPI device names, drop reasons, softirq vector names and kernel symbols, stack frames, finding
summaries, evidence (keys and values), every fix field, probe errors, cost hooks and
lost-event names. Closed-set and closed-form fields (finding kind, severity, fix scope,
listener addresses) are left alone: validation, not rendering, answers for those.
"""
from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path
from typing import Any

# Clear screen, OSC 52 (write the clipboard), OSC 0 (window title), a C1 CSI, a bidi
# override, and rich markup: each must reach the screen as visible, inert text.
ESCAPES = "\x1b[2J\x1b]52;c;ZXZpbA==\x07\x1b]0;pwned\x07\x9b31m\u202e"
MARKUP = "[red]x[/red]"
PAYLOAD = MARKUP + ESCAPES

BUSY = Path(__file__).parent / "tui" / "fixtures" / "busy.json"
# Everything a terminal may act on: C0 controls but the line feed, DEL, C1 controls, and
# Unicode format characters (bidi overrides, zero-width).
_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def controls(text: str) -> list[str]:
    """The control and format characters in `text` (a line feed is allowed)."""
    found = _CONTROL.findall(text)
    found += [ch for ch in text if unicodedata.category(ch) == "Cf"]
    return found


def strings_of(value: Any) -> list[str]:
    """Every string in a JSON-like value, mapping keys included."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in strings_of(key) + strings_of(item)]
    if isinstance(value, list):
        return [s for item in value for s in strings_of(item)]
    return []


def evil(text: str) -> str:
    return f"{text}{PAYLOAD}"


def hostile_capture() -> dict:
    doc = json.loads(BUSY.read_text())
    pods = {pod["pod"]: evil(pod["pod"]) for pod in doc["pods"]}
    doc["node"]["hostname"] = evil(doc["node"]["hostname"])
    for nic in doc["node"]["nics"]:
        nic["name"] = evil(nic["name"])
    for pod in doc["pods"]:
        pod["pod"] = pods[pod["pod"]]
        pod["drops"] = {evil(reason): count for reason, count in pod["drops"].items()}
        for listener in pod["listen"]:
            # The address is validated as an IP address (a closed form), not rendered raw.
            listener["accept_queue_depth_log2"] = [3, 0, 1, 0, 0, 0, 0, 2]  # a histogram to export
    for flow in doc["flows"]:
        flow["pod"] = pods.get(flow["pod"], evil(flow["pod"]))
    for cpu in doc["cpus"]:
        for device in cpu["napi"]:
            device["device"] = evil(device["device"])
        cpu["drops"] = {evil(reason): count for reason, count in cpu["drops"].items()}
        cpu["softirq"] = {**cpu["softirq"], **{evil(vector): stats for vector, stats in cpu["softirq"].items()}}
    for site in doc["drop_sites"]:
        site["reason"], site["symbol"] = evil(site["reason"]), evil(site["symbol"])
    doc["stacks"] = [{"pod": evil("nplab-stacked"), "netns": doc["pods"][0]["netns"], "reason": evil("NO_SOCKET"),
                      "frames": [evil("tcp_v4_rcv"), evil("kfree_skb_reason")], "count": 7}]
    for finding in doc["findings"]:
        if finding.get("pod"):
            finding["pod"] = pods.get(finding["pod"], evil(finding["pod"]))
        finding["summary"] = evil(finding["summary"])
        finding["evidence"] = {evil(key): evil(str(value)) for key, value in finding["evidence"].items()}
        for fix in finding["fixes"]:
            fix["title"] = evil(fix["title"])
            fix["rationale"] = evil(fix["rationale"]) + "\nsecond line" + ESCAPES
            fix["commands"] = [evil(command) for command in fix["commands"]] + [evil("echo hi")]
            fix["persistence"] = evil(fix["persistence"] or "reboot")
            fix["snippet"] = evil(fix["snippet"] or "spec: {}\n")
    for probe in doc["probes"]:
        if not probe["attached"]:
            probe["error"] = evil(probe.get("error") or "refused")
    doc["lost_events"] = {evil("drops_by_netns"): 3}
    doc["cost"] = {"duration_s": 6.0, "timed_s": 1.0, "online_cpus": 2,
                   "bpf_stats": {"enabled": True, "via": "bpf(BPF_ENABLE_STATS)", "error": None},
                   "probes": [{"program": evil("drops"), "hook": evil("tracepoint:skb:kfree_skb"), "events": 9,
                               "events_per_s": 9.0, "run_time_ns": 900, "ns_per_event": 100.0,
                               "cpu_percent": 0.01, "recursion_misses": 0}],
                   "bpf": {"events": 9, "run_time_ns": 900, "events_per_s": 9.0, "ns_per_event": 100.0,
                           "cpu_percent": 0.01},
                   "process": {"user_cpu_s": 0.1, "system_cpu_s": 0.1, "user_cpu_percent": 1.0,
                               "cpu_percent": 2.0, "rss_bytes": 2**26, "rss_anon_bytes": 2**25,
                               "peak_rss_bytes": 2**26}}
    return doc
