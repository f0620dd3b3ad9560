"""The finding types, as the detectors and fix planners in this package import them.

They are defined in `profiler.findings`, below the capture (which stores findings) and the
capture file loader (which validates their kinds), so neither imports the analysis.
"""
from ..findings import FINDING_KINDS, SEVERITY_RANK, Change, Finding, FindingKind, Fix, Scope, Severity, rank

__all__ = ["FINDING_KINDS", "SEVERITY_RANK", "Change", "Finding", "FindingKind", "Fix", "Scope", "Severity", "rank"]
