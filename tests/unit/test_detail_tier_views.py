"""The detail tier as every view shows it, from the one record in the capture: serve's
metrics, the dashboard header, and the command line that asks for it (no kernel)."""
from __future__ import annotations

import os
import subprocess
import sys
from types import MappingProxyType

import pytest

from profiler.cli import build_parser
from profiler.detail_tier import TierSettings
from profiler.exports.prometheus import exposition_text
from profiler.probes.base import ProbeStatus
from profiler.serve import ServeOptions, ServedCapture
from profiler.snapshot import FULL_TIER, QUIET_TIER, PodInterval, Snapshot, TierSwitch
from tests.export_readers import read_prometheus, sample_value
from tui.model import build_model
from tui.widgets.header import header_segments, tier_segment

TROUBLE = TierSwitch(1_700_000_000.0, FULL_TIER, "trouble: drops 120.0/s ≥ 50/s",
                     MappingProxyType({"drops_per_s": 120.0}))
CALM = TierSwitch(1_700_000_100.0, QUIET_TIER, "calm: every figure below 0.5× its threshold for 60s")


def served(*snapshots: Snapshot, mode: str = "auto") -> ServedCapture:
    totals = ServedCapture(interval_s=1.0)
    totals.set_tier(TierSettings(mode=mode))
    totals.set_probes([ProbeStatus("skb_drops", True, "tracepoint:skb:kfree_skb")])
    for snapshot in snapshots:
        totals.add(snapshot, {11: "web"})
    return totals


def drops(start: float, n: int, tier: str, switch: TierSwitch | None = None) -> Snapshot:
    pod = PodInterval("web", 11, drops=MappingProxyType({"SOCKET_RCVBUFF": n}))
    return Snapshot(start, start + 1.0, (pod,), tier=tier, tier_switch=switch)


def metrics(totals: ServedCapture) -> dict:
    return read_prometheus(exposition_text(totals.document()))


def test_serve_metrics_follow_the_tier_its_switches_and_time_in_each():
    totals = served(drops(0, 3, QUIET_TIER))
    families = metrics(totals)
    assert sample_value(families, "netprof_detail_tier", mode="auto") == 0
    assert sample_value(families, "netprof_detail_tier_switches_total", to="full") == 0
    assert sample_value(families, "netprof_detail_tier_switches_total", to="quiet") == 0
    totals.add(drops(1, 120, QUIET_TIER, TROUBLE), {11: "web"})
    families = metrics(totals)
    assert sample_value(families, "netprof_detail_tier", mode="auto") == 1
    assert sample_value(families, "netprof_detail_tier_switches_total", to="full") == 1
    for step in range(2, 5):
        totals.add(drops(step, 0, FULL_TIER, CALM if step == 4 else None), {11: "web"})
    families = metrics(totals)
    assert sample_value(families, "netprof_detail_tier", mode="auto") == 0
    assert sample_value(families, "netprof_detail_tier_switches_total", to="quiet") == 1
    assert sample_value(families, "netprof_detail_tier_seconds_total", tier="full") == 3.0
    assert sample_value(families, "netprof_detail_tier_seconds_total", tier="quiet") == 2.0


def test_a_capture_from_before_tiers_exports_the_full_tier():
    doc = served(drops(0, 1, FULL_TIER)).document()
    del doc["tier"]
    families = read_prometheus(exposition_text(doc))
    assert sample_value(families, "netprof_detail_tier", mode="full") == 1
    assert sample_value(families, "netprof_detail_tier_switches_total", to="full") == 0


def test_the_dashboard_header_says_quiet_or_why_full_and_nothing_for_the_pinned_full_tier():
    quiet = build_model(served(drops(0, 1, QUIET_TIER)).document()).header
    assert (quiet.tier, quiet.tier_mode) == (QUIET_TIER, "auto")
    assert "tier quiet (auto)" in tier_segment(quiet).plain
    full = build_model(served(drops(0, 120, QUIET_TIER, TROUBLE)).document()).header
    assert (full.tier, full.tier_switched_at) == (FULL_TIER, TROUBLE.at)
    segment = tier_segment(full).plain
    assert segment.startswith("tier full (auto) since ") and segment.endswith("drops 120.0/s ≥ 50/s")
    assert any(text.plain == segment for _, text in header_segments(full, False, None))
    pinned = build_model(served(drops(0, 120, FULL_TIER), mode="full").document()).header
    assert tier_segment(pinned) is None


def test_serve_defaults_to_auto_profile_and_tui_to_full():
    parser = build_parser()
    assert parser.parse_args(["serve"]).tier == "auto"
    assert parser.parse_args(["profile"]).tier == "full"
    assert parser.parse_args(["tui"]).tier == "full"
    assert ServeOptions().tier.mode == "auto"


def netprof(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "profiler.cli", *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "COLUMNS": "200"})


@pytest.mark.parametrize("args, needle", [
    (["serve", "--tier", "full", "--tier-thresholds", "drops=5"], "add --tier auto"),
    (["profile", "--tier-thresholds", "drops=5"], "add --tier auto"),
    (["serve", "--tier-thresholds", "drops=x"], "--tier-thresholds: 'drops=x': not a number"),
    (["serve", "--tier-thresholds", "loud=3"], "want NAME=NUMBER"),
    (["serve", "--tier", "loud"], "invalid choice: 'loud'"),
])
def test_bad_tier_options_are_one_line(args, needle):
    result = netprof(*args)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("netprof: ") and needle in lines[0], result.stderr


def test_serve_help_teaches_the_tiers():
    text = " ".join(netprof("serve", "--help").stdout.split())
    for needle in ("--tier {auto,quiet,full}", "always-on counters", "softirq time and latency",
                   "Default: auto", "--tier-thresholds", "drops [50]", "calm seconds [60]"):
        assert needle in text


def test_the_report_says_the_tier_when_part_of_the_capture_was_quiet():
    from rich.console import Console

    from profiler.report import print_report

    def report(doc: dict) -> str:
        console = Console(record=True, width=200)
        print_report(doc, console)
        return console.export_text()

    from profiler.capture import Capture
    from profiler.kernel.features import KernelInfo

    def capture(mode: str, *snapshots: Snapshot) -> dict:
        cap = Capture(KernelInfo("6.18.44", btf=True, kprobes=False, tracefs="/sys/kernel/tracing", headers=None),
                      [], tier=TierSettings(mode=mode))
        for snapshot in snapshots:
            cap.add(snapshot)
        return cap.to_json()

    text = report(capture("auto", drops(0, 3, QUIET_TIER), drops(1, 120, QUIET_TIER, TROUBLE), drops(2, 1, FULL_TIER)))
    assert "detail tier auto: quiet 2.0s, full 1.0s" in text
    assert "1 switch(es), last to full: trouble: drops 120.0/s ≥ 50/s" in text
    assert "detail tier" not in report(capture("full", drops(0, 3, FULL_TIER)))
