"""The per-CPU input backlog (system/softnet.py → cpus[].softnet.dropped; the drops probe's
CPU_BACKLOG → cpus[].drops, pods[].drops): packets dropped because a CPU's backlog was full."""
from __future__ import annotations

from ...document import ProfileDocument
from .. import thresholds as T
from ..findings import Finding
from ..fixes import node_sysctl_fixes, round_up_pow2
from .base import AnalysisContext, per_s


def detect_cpu_backlog_drops(doc: ProfileDocument, ctx: AnalysisContext) -> list[Finding]:
    # softnet_stat charges the CPU whose backlog was full; the tracepoint fires on the CPU
    # that tried to enqueue. The full backlog is what the fix is about: prefer softnet.
    full_backlog = {cpu.cpu: cpu.softnet_dropped for cpu in doc.cpus}
    enqueuing = {cpu.cpu: cpu.drop_count("CPU_BACKLOG") for cpu in doc.cpus}
    by_cpu = full_backlog if any(full_backlog.values()) else enqueuing
    total = max(sum(full_backlog.values()), sum(enqueuing.values()),
                sum(pod.drop_count("CPU_BACKLOG") for pod in doc.pods))
    if total <= 0:
        return []
    rate = per_s(doc, total)
    current = doc.sysctl_int("net.core.netdev_max_backlog") or 1000
    target = min(T.NETDEV_MAX_BACKLOG_MAX, round_up_pow2(max(2 * current, current + rate)))
    pods = {pod.name: pod.drop_count("CPU_BACKLOG") for pod in doc.pods if pod.drop_count("CPU_BACKLOG")}
    # The backlog is per CPU, not per pod, but when one pod's traffic is most of the drops,
    # that is the pod that suffers (and likely the one sending the burst).
    victim = max(pods, key=pods.get) if pods and 2 * max(pods.values()) > sum(pods.values()) else None
    evidence = {"backlog_drops": total, "backlog_drops_per_s": round(rate, 2),
                "drops_by_cpu": {str(c): n for c, n in sorted(by_cpu.items()) if n},
                "drops_by_pod": pods, "netdev_max_backlog": current}
    why = (f"{total} packets ({rate:.0f}/s) were dropped because a CPU's input backlog held "
           f"netdev_max_backlog={current} packets already. {target} absorbs twice that queue plus a "
           "second of the drop rate. A backlog that fills means that CPU cannot keep up with NET_RX: "
           "spread the work too (RPS / IRQ affinity).")
    return [Finding(
        kind="cpu-backlog-drops", severity="critical" if rate >= T.BACKLOG_DROPS_PER_S_CRITICAL else "warning",
        summary=f"{total} packets dropped at the per-CPU input backlog ({rate:.0f}/s), netdev_max_backlog={current}",
        evidence=evidence, score=rate,
        fixes=tuple(node_sysctl_fixes("net.core.netdev_max_backlog", str(current), str(target),
                                      f"raise netdev_max_backlog to {target}", why)),
        cpu=max(by_cpu, key=by_cpu.get) if any(by_cpu.values()) else None,
        pod=victim,
    )]
