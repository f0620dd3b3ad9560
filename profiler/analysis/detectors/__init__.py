"""Detectors: a capture (its profile document) → findings with evidence and fixes.

They read the profile document (the stable contract) through profiler.document, so a live
capture and a saved one (`netprof fix --from capture.json`) are judged by the same code and
count as the report and the dashboard count. Every threshold is a rate over the capture and
lives in thresholds.py with its reasoning (docs/findings.md).

One module per signal; DETECTORS is the one list of them, in the order they run.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from ...document import ProfileDocument
from ..findings import Finding, rank
from .backlog import detect_cpu_backlog_drops
from .base import AnalysisContext, Detector
from .conntrack import detect_conntrack
from .listen import detect_listen_overflow, detect_syn_backlog_overflow
from .napi import detect_napi_budget
from .rcvbuf import detect_rcvbuf_drops
from .retransmits import detect_tcp_retransmits, drops_on_path
from .softirq import detect_softirq_imbalance

__all__ = ["AnalysisContext", "DETECTORS", "Detector", "analyze", "drops_on_path"]

DETECTORS: tuple[Detector, ...] = (
    detect_listen_overflow,
    detect_syn_backlog_overflow,
    detect_softirq_imbalance,
    detect_napi_budget,
    detect_cpu_backlog_drops,
    detect_conntrack,
    detect_rcvbuf_drops,
    detect_tcp_retransmits,
)


def analyze(doc: Mapping[str, Any] | ProfileDocument, ctx: AnalysisContext | None = None,
            detectors: Iterable[Detector] = DETECTORS) -> list[Finding]:
    """Every finding of a capture, ranked. `doc`: its profile JSON, or a ProfileDocument."""
    document = doc if isinstance(doc, ProfileDocument) else ProfileDocument(doc)
    ctx = ctx or AnalysisContext()
    findings: list[Finding] = []
    for detect in detectors:
        findings.extend(detect(document, ctx))
    return rank(findings)
