"""NAPI budget (probes/napi.py → cpus[].napi, system/softnet.py → cpus[].softnet): polls
that use their whole budget while softirq runs out of budget or time (time_squeeze)."""
from __future__ import annotations

from ...document import ProfileDocument
from .. import thresholds as T
from ..findings import Finding, Fix
from ..fixes import node_sysctl_fixes
from .base import AnalysisContext, per_s


def detect_napi_budget(doc: ProfileDocument, ctx: AnalysisContext) -> list[Finding]:
    findings = []
    budget = doc.sysctl_int("net.core.netdev_budget")
    usecs = doc.sysctl_int("net.core.netdev_budget_usecs")
    for cpu in doc.cpus:
        polls = cpu.napi_polls
        exhausted = cpu.napi_budget_exhausted
        squeeze = cpu.time_squeeze
        share = exhausted / polls if polls else 0.0
        squeeze_rate = per_s(doc, squeeze)
        if share < T.NAPI_EXHAUSTED_SHARE_WARNING or squeeze_rate < T.TIME_SQUEEZE_PER_S_WARNING:
            continue
        evidence = {"napi_polls": polls, "budget_exhausted_polls": exhausted, "exhausted_share": round(share, 3),
                    "time_squeeze": squeeze, "time_squeeze_per_s": round(squeeze_rate, 2),
                    "netdev_budget": budget, "netdev_budget_usecs": usecs}
        fixes: list[Fix] = []
        if budget is not None and budget < T.NETDEV_BUDGET_MAX:
            target = min(T.NETDEV_BUDGET_MAX, budget * 2)
            fixes += node_sysctl_fixes(
                "net.core.netdev_budget", str(budget), str(target), f"raise netdev_budget to {target}",
                f"{100 * share:.0f}% of NAPI polls on CPU {cpu.cpu} used their whole budget and the "
                f"softirq ran out of budget {squeeze_rate:.1f} times/s (time_squeeze): packets waited for the "
                f"next softirq. Doubling the budget ({budget} → {target}) lets one softirq run drain more. "
                "It lengthens softirq runs, so watch application latency on that CPU; spreading NET_RX over "
                "more CPUs (RPS/IRQ affinity) is the other half of the fix.")
        if usecs is not None and usecs < T.NETDEV_BUDGET_USECS_MAX:
            target_us = min(T.NETDEV_BUDGET_USECS_MAX, usecs * 2)
            fixes += node_sysctl_fixes(
                "net.core.netdev_budget_usecs", str(usecs), str(target_us),
                f"raise netdev_budget_usecs to {target_us}",
                "the time limit of one softirq run; raise it with netdev_budget so the packet budget is the limit.")
        findings.append(Finding(
            kind="napi-budget-exhausted", severity="warning", cpu=cpu.cpu,
            summary=(f"CPU {cpu.cpu}: {100 * share:.0f}% of NAPI polls exhausted their budget, "
                     f"{squeeze_rate:.1f} time squeezes/s"),
            evidence=evidence, fixes=tuple(fixes), score=squeeze_rate,
        ))
    return findings
