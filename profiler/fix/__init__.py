"""`netprof fix`: apply node-scope fixes with a journal, and roll them back (see docs/fix.md)."""
from __future__ import annotations

from .apply import (
    DEFAULT_JOURNAL_DIR,
    JOURNAL_FORMAT,
    JOURNAL_NAME,
    ApplyReport,
    FixError,
    PlanIdentity,
    WriteResult,
    apply_changes,
    check_plan,
    current_identity,
    describe,
    format_report,
    missing_privilege,
    node_scope_changes,
    rollback,
    same_value,
)

__all__ = [
    "DEFAULT_JOURNAL_DIR", "JOURNAL_FORMAT", "JOURNAL_NAME", "ApplyReport", "FixError", "PlanIdentity",
    "WriteResult", "apply_changes", "check_plan", "current_identity", "describe", "format_report",
    "missing_privilege", "node_scope_changes", "rollback", "same_value",
]
