"""The queries netprof ships (docs/exports.md, deploy/grafana-dashboard.json,
deploy/prometheus-rules.yaml) against what netprof exports, without a kernel: promtool
accepts the rules, and every metric a query names is one the exporter writes. The real
Prometheus evaluation is tests/integration/test_prometheus.py."""
from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from profiler.exports.prometheus import exposition_text
from tests.conftest import skip_or_fail
from tests.export_readers import read_prometheus
from tests.prometheus_queries import (
    DASHBOARD, RULES, all_queries, dashboard_queries, docs_queries, recorded_names, rule_queries,
)
from tests.unit.test_export_formats import sample_capture

SAMPLE_SUFFIXES = ("", "_total", "_bucket", "_count", "_sum")


def exported_sample_names() -> set[str]:
    doc = sample_capture().to_json()
    doc["ignored_events"] = {"not_specified": 3}   # the sample capture has none
    families = read_prometheus(exposition_text(doc))
    return {sample.name for samples in families.values() for sample in samples}


def test_promtool_accepts_the_rules():
    promtool = shutil.which("promtool")
    if promtool is None:
        skip_or_fail("promtool is missing (apt install prometheus; ./bootstrap.sh test installs it)")
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rule_queries())} rules found" in result.stdout


def test_every_query_names_metrics_netprof_exports():
    exported = exported_sample_names() | recorded_names()
    for query in all_queries():
        names = query.metric_names()
        assert names, f"{query.source}: no netprof metric in {query.expr}"
        unknown = names - exported
        assert not unknown, f"{query.source}: {sorted(unknown)} not exported"


def test_a_renamed_metric_would_be_caught():
    exported = exported_sample_names()
    assert "netprof_drops_total" in exported
    assert "netprof_pod_netstat_total" not in exported, "the generic counter family is gone"


def test_docs_dashboard_and_rules_each_have_their_queries():
    docs = docs_queries()
    assert len(docs) >= 10 and all(q.expr.count("(") == q.expr.count(")") for q in docs)
    dashboard = json.loads(DASHBOARD.read_text())
    assert [p["title"] for p in dashboard["panels"] if not p.get("targets")] == [], "every panel has a query"
    assert len(dashboard_queries()) == len(dashboard["panels"])
    alerts = {q.source for q in rule_queries() if q.alert}
    assert alerts == {"rule: NetprofPodRetransmitRatioHigh", "rule: NetprofListenOverflow",
                      "rule: NetprofConntrackFull", "rule: NetprofSoftirqSaturation", "rule: NetprofEventsLost"}


@pytest.mark.parametrize("expr, watched", [
    ("netprof:x > 0.02", "netprof:x"),
    ("a > 0.9 or sum by (n) (rate(b[5m])) > 0", "a or sum by (n) (rate(b[5m]))"),
    ("sum(a) / (sum(b) > 0) > 1", "sum(a) / (sum(b))"),
])
def test_an_alerts_watched_value_is_its_condition_without_thresholds(expr, watched):
    from tests.prometheus_queries import Query

    assert Query("rule: t", expr, alert=True).watched == watched


def test_promtool_lints_the_exposition_clean_but_for_node_exporters_camel_case():
    """promtool check metrics finds nothing wrong except what it also says of node_exporter:
    the netstat names keep the kernel's CamelCase fields (TcpExt_ListenOverflows) on purpose."""
    promtool = shutil.which("promtool")
    if promtool is None:
        skip_or_fail("promtool is missing (apt install prometheus; ./bootstrap.sh test installs it)")
    result = subprocess.run([promtool, "check", "metrics"], input=exposition_text(sample_capture().to_json()),
                            capture_output=True, text=True, timeout=60)
    problems = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert problems, "the sample capture has netstat counters"
    others = [line for line in problems
              if not (line.startswith("netprof_netstat_") and "should be written in 'snake_case' not 'camelCase'" in line)]
    assert others == []
