"""`netprof fix`: apply node-scope fixes with a journal, and roll them back (see docs/fix.md)."""
from __future__ import annotations

from .apply import ApplyReport, WriteResult, apply_changes, check_plan, format_report, rollback
from .identity import FixError, PlanIdentity, current_identity, missing_privilege
from .journal import DEFAULT_JOURNAL_DIR, JOURNAL_FORMAT, JOURNAL_NAME
from .targets import describe, node_scope_changes, same_value

__all__ = [
    "DEFAULT_JOURNAL_DIR", "JOURNAL_FORMAT", "JOURNAL_NAME", "ApplyReport", "FixError", "PlanIdentity",
    "WriteResult", "apply_changes", "check_plan", "current_identity", "describe", "format_report",
    "missing_privilege", "node_scope_changes", "rollback", "same_value",
]
