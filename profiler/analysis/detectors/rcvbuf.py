"""Socket receive buffers (the drops probe's SOCKET_RCVBUFF, probes' sock_rcvqueue_full,
Udp.RcvbufErrors → pods[]): packets dropped at a full receive buffer."""
from __future__ import annotations

from ...document import ProfileDocument
from .. import thresholds as T
from ..findings import Finding, Fix
from ..fixes import node_sysctl_fixes
from .base import AnalysisContext, per_s


def detect_rcvbuf_drops(doc: ProfileDocument, ctx: AnalysisContext) -> list[Finding]:
    findings = []
    rmem_max = doc.sysctl_int("net.core.rmem_max")
    rmem_default = doc.sysctl_int("net.core.rmem_default")
    for pod in doc.pods:
        drops = max(pod.drop_count("SOCKET_RCVBUFF"), pod.rcvqueue_full, pod.counter("Udp.RcvbufErrors"))
        if drops <= 0:
            continue
        rate = per_s(doc, drops)
        evidence = {"rcvbuf_drops": drops, "rcvbuf_drops_per_s": round(rate, 2),
                    "rmem_default": rmem_default, "rmem_max": rmem_max,
                    "udp_rcvbuf_errors": pod.netstat.get("Udp.RcvbufErrors")}
        fixes: list[Fix] = [Fix(
            scope="app", title="read faster, or ask for a bigger SO_RCVBUF",
            rationale=(f"{drops} packets ({rate:.1f}/s) arrived at a socket whose receive buffer was full: the "
                       "application did not read them in time. A bigger buffer absorbs bursts; a reader that "
                       "is too slow needs more threads or less work per packet. setsockopt(SO_RCVBUF) is "
                       f"capped at net.core.rmem_max ({rmem_max})."),
            snippet="int size = 4 << 20;\nsetsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, sizeof size);",
        )]
        if rmem_max is not None and rmem_max < T.RMEM_MAX_CAP:
            target = min(T.RMEM_MAX_CAP, max(rmem_max * 2, 8 * 1024 * 1024))
            fixes += node_sysctl_fixes(
                "net.core.rmem_max", str(rmem_max), str(target), f"allow SO_RCVBUF up to {target >> 20} MiB",
                f"rmem_max ({rmem_max}) caps what an application may ask for; {target} lets the application "
                "fix above take effect. It changes no socket by itself.")
        findings.append(Finding(
            kind="socket-rcvbuf-drops",
            severity="critical" if rate >= T.RCVBUF_DROPS_PER_S_CRITICAL else "warning", pod=pod.name,
            summary=f"{pod.name}: {drops} packets dropped at full socket receive buffers ({rate:.1f}/s)",
            evidence=evidence, fixes=tuple(fixes), score=rate,
        ))
    return findings
