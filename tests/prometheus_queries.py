"""Every PromQL query netprof ships, from where it ships: docs/exports.md's example queries,
deploy/grafana-dashboard.json's panels and deploy/prometheus-rules.yaml's rules. The tests
check them against netprof's exposition (unit) and a real Prometheus (integration), so a
query in the docs is always one the tests evaluate."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "exports.md"
DASHBOARD = REPO / "deploy" / "grafana-dashboard.json"
RULES = REPO / "deploy" / "prometheus-rules.yaml"
DOCS_MARKER = "**Queries for Grafana**"
# Grafana's variables, as the "All" choice and a 5-minute range would set them.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$node": ".*", "$namespace": ".*"}
# A comparison with a number at the end of an alert's condition: what is left without it
# is the value the alert watches.
_THRESHOLD = re.compile(r"\s*(?:>|<|>=|<=|==|!=)\s*[0-9.]+(?=\s*(?:\bor\b|\band\b|\bunless\b|\)|$))")
_METRIC = re.compile(r"\b(netprof(?:_|:)[A-Za-z0-9_:]+)")
_BY = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")


@dataclass(frozen=True)
class Query:
    source: str   # where it ships: "docs", "dashboard: <panel title>", "rule: <name>"
    expr: str
    alert: bool = False

    @property
    def watched(self) -> str:
        """An alert's condition without its thresholds (the value it watches); else expr."""
        return _THRESHOLD.sub("", self.expr) if self.alert else self.expr

    def metric_names(self) -> set[str]:
        return set(_METRIC.findall(self.expr))

    def grouping_labels(self) -> set[str] | None:
        """Every label a `by (…)` clause of the query keeps (None without one): the labels its
        result may have (`a or b` may have either side's)."""
        clauses = _BY.findall(self.expr)
        if not clauses:
            return None
        return {label.strip() for clause in clauses for label in clause.split(",") if label.strip()}


def docs_queries() -> list[Query]:
    """The fenced block after DOCS_MARKER in docs/exports.md, one query a line (# comments)."""
    text = DOCS.read_text()
    after = text.split(DOCS_MARKER, 1)[1]
    block = after.split("```", 2)[1]
    lines = [line.strip() for line in block.splitlines()[1:]]
    return [Query("docs", line) for line in lines if line and not line.startswith("#")]


def grafana_expr(expr: str) -> str:
    for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda item: -len(item[0])):
        expr = expr.replace(variable, value)
    if "$" in expr:
        raise AssertionError(f"a Grafana variable the tests do not know: {expr}")
    return expr


def dashboard_queries() -> list[Query]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [Query(f"dashboard: {panel['title']}", grafana_expr(target["expr"]))
            for panel in dashboard["panels"] for target in panel.get("targets", [])]


def rule_queries() -> list[Query]:
    import yaml

    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [Query(f"rule: {rule.get('record') or rule.get('alert')}", " ".join(rule["expr"].split()),
                  alert="alert" in rule)
            for group in groups for rule in group["rules"]]


def recorded_names() -> set[str]:
    import yaml

    return {rule["record"] for group in yaml.safe_load(RULES.read_text())["groups"]
            for rule in group["rules"] if "record" in rule}


def all_queries() -> list[Query]:
    return [*docs_queries(), *dashboard_queries(), *rule_queries()]
