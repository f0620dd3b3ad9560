"""Network softirq time per CPU (probes/softirq.py → cpus[].softirq): one CPU doing most of
the node's network work, with the NIC queue IRQs pinned to it and an IRQ affinity plan."""
from __future__ import annotations

from typing import Any

from ...document import ProfileDocument
from ...system.cpus import parse_cpu_list
from ...system.irqs import landing_cpus_text
from .. import thresholds as T
from ..findings import Finding, Fix
from .base import MIN_CAPTURE_S, AnalysisContext, capture_s

NETWORK_VECTORS = ("NET_RX", "NET_TX")


def _online_cpus(doc: ProfileDocument) -> set[int]:
    try:
        return set(parse_cpu_list(str(doc.node.get("cpus_online") or "")))
    except ValueError:
        return set()


def _net_softirq_share(doc: ProfileDocument) -> dict[int, float]:
    # Every online CPU is in the comparison, the idle ones at 0: the capture lists only CPUs
    # that did network work, and the worst imbalance -- every queue IRQ on one CPU, the others
    # doing nothing -- would otherwise leave one CPU to compare with nobody.
    shares = dict.fromkeys(_online_cpus(doc), 0.0)
    # Over the seconds the softirq program ran: the quiet tier's are not idle ones.
    seconds = capture_s(doc) if doc.tier.detail_s is None else max(doc.tier.detail_s, MIN_CAPTURE_S)
    for cpu in doc.cpus:
        busy_ns = sum(cpu.softirq_time_ns(vector) for vector in NETWORK_VECTORS)
        shares[cpu.cpu] = busy_ns / (seconds * 1e9)
    return shares


def _queues_pinned_to(doc: ProfileDocument, busiest: int) -> list[str]:
    queues_here = []
    for nic in doc.nics:
        for queue in nic.get("queues", []):
            if queue.get("irq") is None:
                continue
            try:
                cpus = landing_cpus_text(queue.get("affinity"), queue.get("effective_affinity"))
            except ValueError:
                continue
            # Pinned to that CPU alone: an IRQ allowed on several CPUs is not "on" this one.
            if cpus == {busiest}:
                queues_here.append(f"{nic['name']} {queue['kind']}-{queue['index']} (IRQ {queue['irq']})")
    return queues_here


def detect_softirq_imbalance(doc: ProfileDocument, ctx: AnalysisContext) -> list[Finding]:
    shares = _net_softirq_share(doc)
    if len(shares) < 2:
        return []
    busiest = max(shares, key=shares.get)
    top = shares[busiest]
    others = [s for c, s in shares.items() if c != busiest]
    mean_others = sum(others) / len(others)
    if top < T.SOFTIRQ_MIN_SHARE or top < T.SOFTIRQ_IMBALANCE_FACTOR * max(mean_others, 1e-9):
        return []
    evidence: dict[str, Any] = {
        "net_softirq_share_by_cpu": {str(c): round(s, 3) for c, s in sorted(shares.items())},
        "busiest_cpu": busiest, "busiest_share": round(top, 3), "mean_share_of_others": round(mean_others, 3),
    }
    queues_here = _queues_pinned_to(doc, busiest)
    if queues_here:
        evidence["nic_queue_irqs_on_cpu"] = queues_here
    fixes: list[Fix] = []
    if ctx.topology is not None:
        from ..irq_plan import plan_irq_affinity

        rx_share = dict.fromkeys(_online_cpus(doc), 0.0)
        rx_share.update({cpu.cpu: cpu.softirq_time_ns("NET_RX") / (capture_s(doc) * 1e9) for cpu in doc.cpus})
        plan = plan_irq_affinity(ctx.topology, irqbalance_running=ctx.irqbalance_running,
                                 net_rx_share_by_cpu=rx_share, root=ctx.root, irqbalance=ctx.irqbalance)
        fix = plan.to_fix(evidence)
        if fix is not None:
            fixes.append(fix)
    severity = "critical" if top >= T.SOFTIRQ_BUSY_SHARE else "warning"
    where = f" — it takes {', '.join(queues_here)}" if queues_here else ""
    return [Finding(
        kind="softirq-imbalance", severity=severity, cpu=busiest,
        summary=(f"CPU {busiest} spends {100 * top:.0f}% of its time in network softirqs, the other CPUs "
                 f"{100 * mean_others:.0f}% on average{where}"),
        evidence=evidence, fixes=tuple(fixes), score=top,
    )]
