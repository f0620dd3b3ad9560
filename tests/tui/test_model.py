"""The dashboard model: plain data from profile JSON, checked on recorded captures."""
from __future__ import annotations

import pytest

from tui.model import (
    History, build_model, cost_summary, events_counted, format_rate, format_share,
    irqs_by_cpu, log2_buckets, pod_rates, sparkline,
)


def test_findings_keep_the_capture_ranking_and_name_where(busy):
    model = build_model(busy)
    assert [f.kind for f in model.findings] == [f["kind"] for f in busy["findings"]]
    assert model.findings[0].severity == "critical"
    wheres = {f.kind: f.where for f in model.findings}
    assert wheres["softirq-imbalance"] == "CPU 0"
    assert wheres["listen-overflow"].endswith("-server")
    # Keys are stable and distinct: a finding keeps its row while it lasts.
    assert len({f.key for f in model.findings}) == len(model.findings)


def test_pod_rates_are_per_second_over_the_capture(busy):
    model = build_model(busy)
    duration_s = busy["duration_s"]
    lossy = next(p for p in model.pods if p.name.endswith("-lossy"))
    assert lossy.rates.retransmits_per_s == pytest.approx(231 / duration_s)
    assert lossy.worst_severity == "critical"
    server = next(p for p in model.pods if p.name == "nplab58ede0-server")
    assert server.rates.listen_overflows_per_s == pytest.approx(32 / duration_s)
    assert server.rates.top_drops[0][0] == "TCP_LISTEN_OVERFLOW"
    client = next(p for p in model.pods if p.name == "nplabf7af33-client")
    # drop and insert_failed count the same refused packets: not twice.
    assert client.rates.conntrack_failures_per_s == pytest.approx(8078 / duration_s)
    quiet = next(p for p in model.pods if p.name == "host")
    assert quiet.rates.trouble_per_s == 0 and quiet.worst_severity is None


def test_cpu_rows_show_the_imbalance_and_the_irqs(busy):
    model = build_model(busy)
    cpu0, cpu1 = model.cpus
    assert cpu0.net_rx_share == pytest.approx(4832697385 / (busy["duration_s"] * 1e9))
    assert cpu0.net_rx_share > 0.7 > cpu1.net_rx_share
    assert cpu0.worst_severity == "critical" and cpu1.worst_severity is None
    # virtio2-output.0 (IRQ 39) has effective affinity 0, input.0 (IRQ 38) has 1.
    assert [irq.label for irq in cpu0.irqs] == ["eth0 tx-0 (IRQ 39)"]
    assert [irq.short for irq in cpu1.irqs] == ["eth0 rx-0 (38)"]


def _quiet_all_along(document: dict) -> dict:
    """The same capture as if the quiet detail tier had run all of it (serve --tier quiet)."""
    return {**document, "tier": {"mode": "quiet", "current": "quiet", "full_s": 0.0,
                                 "quiet_s": document["duration_s"], "switches": []}}


def test_cpu_rows_of_a_quiet_tier_window_are_not_measured_rather_than_zero(busy):
    quiet_rows = build_model(_quiet_all_along(busy)).cpus
    assert quiet_rows and not any(row.detail_measured for row in quiet_rows)
    # Softnet figures come from /proc in both tiers and stay measured.
    assert [row.time_squeeze_per_s for row in quiet_rows] == [row.time_squeeze_per_s for row in build_model(busy).cpus]
    assert all(row.detail_measured for row in build_model(busy).cpus)
    # Part of the window in the full tier: measured, over the full tier's seconds.
    half = {**busy, "tier": {"mode": "auto", "current": "full", "full_s": busy["duration_s"] / 2,
                             "quiet_s": busy["duration_s"] / 2, "switches": []}}
    cpu1 = build_model(half).cpus[1]
    assert cpu1.detail_measured and cpu1.net_rx_share == pytest.approx(2 * build_model(busy).cpus[1].net_rx_share)


def test_header(busy):
    header = build_model(busy, mode="replay").header
    assert (header.node, header.kernel) == ("vm", "6.18.44-fc-v669")
    assert (header.probes_attached, header.probes_total) == (10, 12)
    assert {name for name, _ in header.probes_missing} == {"listen_syn_path", "conntrack_confirm"}
    assert all("kprobes" in why for _, why in header.probes_missing)
    assert header.events_per_s == pytest.approx(events_counted(busy) / busy["duration_s"])
    assert header.cost is None


def test_no_findings_and_quiet_pods(quiet):
    model = build_model(quiet)
    assert model.findings == ()
    assert {p.name.split("-")[-1] for p in model.pods} >= {"web", "db"}


def test_history_keeps_the_last_values_and_forgets_gone_pods():
    history = History(length=3)

    def interval(pods, share):
        return {"duration_s": 1.0,
                "pods": [{"pod": f"p{n}", "netns": n, "retransmits": r} for n, r in pods],
                "cpus": [{"cpu": 0, "softirq": {"NET_RX": {"time_ns": int(share * 1e9)}}}]}

    for step in range(5):
        history.push(interval([(1, step), (2, 1)] if step < 4 else [(1, step)], step / 10))
    view = history.view()
    assert view.pods[1] == (2.0, 3.0, 4.0)
    assert 2 not in view.pods  # its netns went away
    assert view.cpus[0] == pytest.approx((0.2, 0.3, 0.4))
    model = build_model(interval([(1, 4)], 0.4), history=view, mode="live", interval_s=1.0)
    assert model.pods[0].trend == (2.0, 3.0, 4.0)


def test_sparkline_scales_and_keeps_zero_blank():
    assert sparkline([0, 1, 2, 4], 4) == " ▂▄█"
    assert sparkline([0.5], 3, top=1.0) == "  ▄"
    assert sparkline([], 2) == "  "
    assert len(sparkline(range(100), 10)) == 10


def test_text_forms():
    assert format_rate(0) == "·" and format_rate(0.25) == "0.2" and format_rate(12.4) == "12"
    assert format_rate(42_000) == "42.0k" and format_rate(351_000) == "351k" and format_rate(2.5e7) == "25.0M"
    assert format_share(0) == "·" and format_share(0.8) == "80%" and format_share(0.03) == "3.0%"
    assert format_share(0.00001) == "<0.1%"
    assert log2_buckets([0, 0, 3, 0, 1, 0]) == [("4ns–8ns", 3), ("8ns–16ns", 0), ("16ns–32ns", 1)]


def test_irqs_by_cpu_needs_one_cpu():
    node = {"nics": [{"name": "eth0", "queues": [
        {"index": 0, "kind": "rx", "irq": 30, "effective_affinity": "2"},
        {"index": 1, "kind": "rx", "irq": 31, "effective_affinity": "0-3"},
        {"index": 2, "kind": "rx", "irq": None, "effective_affinity": "1"},
        {"index": 3, "kind": "combined", "irq": 33, "effective_affinity": "", "affinity": "1"},
        {"index": 4, "kind": "rx", "irq": 34, "effective_affinity": "garbage"},
    ]}]}
    labels = {cpu: [irq.label for irq in irqs] for cpu, irqs in irqs_by_cpu(node).items()}
    assert labels == {2: ["eth0 rx-0 (IRQ 30)"], 1: ["eth0 combined-3 (IRQ 33)"]}
    assert irqs_by_cpu(None) == {}


def test_pod_rates_with_missing_fields():
    rates = pod_rates({"pod": "x", "netns": 1}, 2.0)
    assert rates.trouble_per_s == 0
    assert pod_rates({"pod": "x", "netns": 1, "retransmits": 4}, 0.0).retransmits_per_s == 0


def test_cost_summary_reads_the_capture_cost_section():
    assert cost_summary(None) is None and cost_summary({}) is None
    cost = {"bpf": {"events": 1101477, "cpu_percent": 8.913},
            "process": {"user_cpu_percent": 10.4, "cpu_percent": 14.718, "rss_bytes": 269926400}}
    assert cost_summary(cost) == "BPF 8.9%, netprof 14.7% CPU, 257 MiB"
    assert cost_summary({"bpf": {"cpu_percent": None}, "process": {}}) == "measured (i)"
    assert build_model({"cost": cost}).header.cost == "BPF 8.9%, netprof 14.7% CPU, 257 MiB"


def test_the_model_is_inert_even_for_a_feed_error():
    """Everything the screens read comes out of build_model inert: the documents, and the
    text of the error a failed sample reports in the header."""
    doc = {"node": {"hostname": "n\x1b]0;t\x07"}, "pods": [{"pod": "p\x1b[2J", "netns": 1}], "duration_s": 1.0}
    model = build_model(doc, error="sampling failed: /run/netns/x\x1b[2J: gone")
    assert model.header.node == "n\\x1b]0;t\\x07" and model.pods[0].name == "p\\x1b[2J"
    assert model.header.error == "sampling failed: /run/netns/x\\x1b[2J: gone"
    assert model.document["pods"][0]["pod"] == "p\\x1b[2J"


def test_baseline_view_rates_and_noise_judgement_come_from_one_place(busy):
    from copy import deepcopy

    from profiler.analysis.diff import diff_captures
    from tui.model import baseline_view, format_delta, format_share_delta

    base = deepcopy(busy)
    same = baseline_view(base, deepcopy(base), marked_at=0.0)
    assert (same.worse, same.better, same.headline) == (0, 0, None)
    later = deepcopy(base)
    lossy = next(p for p in later["pods"] if p["retransmits"])
    lossy["retransmits"] = 0
    lossy["retransmitted_segments"] = 0
    view = baseline_view(base, later, marked_at=0.0, reason="fix applied")
    diff = diff_captures(base, later)
    assert view.better == sum(c.direction == "better" for c in diff.changes) >= 1
    assert view.worse == 0 and view.reason == "fix applied"
    assert view.pod(lossy["netns"]).retransmits_per_s == pytest.approx(
        next(p for p in base["pods"] if p["netns"] == lossy["netns"])["retransmits"] / base["duration_s"])
    assert view.pod(123456).retransmits_per_s == 0  # a pod born after the baseline had nothing then
    assert [format_delta(x) for x in (0.0, 0.01, 12.4, -0.5, 4200)] == ["·", "·", "+12", "−0.5", "+4200"]
    assert [format_share_delta(x) for x in (0.0, 0.31, -0.05)] == ["·", "+31%", "−5%"]
