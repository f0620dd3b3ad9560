"""The listen queues (sources/listen.py, probes/listen_*.py, the drops probe's
TCP_LISTEN_OVERFLOW → pods[].listen[], pods[].netstat): accept queues that overflow, and
SYN queues that fill."""
from __future__ import annotations

from typing import Any

from ...document import ProfileDocument
from .. import thresholds as T
from ..findings import Finding, Fix
from ..fixes import node_sysctl_fixes, pod_sysctl_fixes, round_up_pow2
from .base import AnalysisContext, netns_path, per_s, to_int


def detect_listen_overflow(doc: ProfileDocument, ctx: AnalysisContext) -> list[Finding]:
    findings = []
    for pod in doc.pods:
        # The larger of the netns counter and the drops (profiler.document: every view's rule).
        overflows = pod.listen_overflows
        if overflows <= 0:
            continue
        # The listener to blame: the one whose queue hit its limit, most overflow drops first.
        full = sorted(pod.listeners, key=lambda l: (-l.overflow_drops, -l.samples_full, -l.fill))
        listener = full[0] if full else None
        rate = per_s(doc, overflows)
        somaxconn = to_int(doc.pod_sysctl(pod, "net.core.somaxconn"))
        if listener and listener.somaxconn is not None:
            somaxconn = listener.somaxconn
        limit = listener.reported("accept_queue_limit") if listener else None
        asked = listener.requested_backlog if listener else None
        evidence: dict[str, Any] = {
            "listen_overflows": overflows, "overflows_per_s": round(rate, 2),
            "listen_drops": pod.counter("TcpExt.ListenDrops"),
            "somaxconn": somaxconn,
        }
        where = pod.name
        if listener:
            where = f"{pod.name} {listener.label}"
            evidence.update(listener=listener.label,
                            accept_queue_peak=listener.reported("accept_queue_peak"),
                            accept_queue_limit=limit, requested_backlog=asked,
                            samples_full=listener.reported("samples_full"))
        # Which limit bites: the kernel caps listen(backlog) at somaxconn.
        if asked is not None and somaxconn is not None and asked > somaxconn:
            bites = "somaxconn"
        elif asked is not None:
            bites = "backlog"
        elif limit is not None and somaxconn is not None and limit >= somaxconn:
            bites = "somaxconn"
        else:
            bites = "backlog"
        evidence["limit_that_bites"] = bites
        current = limit or (somaxconn if bites == "somaxconn" else None) or 128
        # Room for twice the queue that overflowed plus a second of the overflow rate.
        target = min(T.LISTEN_BACKLOG_MAX, round_up_pow2(max(2 * current, current + rate)))
        why = (f"the accept queue of {where} overflowed {overflows} times ({rate:.1f}/s) at a limit of "
               f"{current}; {target} gives room for twice that queue plus a second of the overflow "
               "rate. The application must also accept() faster than connections arrive, or the "
               "bigger queue only delays the overflow.")
        fixes: list[Fix] = []
        if bites == "somaxconn" or (somaxconn is not None and target > somaxconn):
            key = "net.core.somaxconn"
            if pod.name == "host":
                fixes += node_sysctl_fixes(key, str(somaxconn) if somaxconn is not None else None,
                                           str(target), f"raise {key} to {target}", why)
            else:
                fixes += pod_sysctl_fixes(pod.name, netns_path(ctx, pod), key,
                                          str(somaxconn) if somaxconn is not None else None, str(target),
                                          f"raise {key} to {target} in {pod.name}", why)
        fixes.append(Fix(
            scope="app",
            title=f"listen() with a backlog of {target}",
            rationale=("the kernel uses min(listen() backlog, somaxconn); "
                       + (f"the application asked for {asked}. " if asked is not None else
                          "the backlog the application asked for was not seen (it listened before the capture). ")
                       + why),
            snippet=(f"listen(fd, {target});   /* C */\n"
                     f"sock.listen({target})   # Python\n"
                     f"# nginx: listen 80 backlog={target};  Go: net.ListenConfig + sysctl; Java: new ServerSocket(port, {target})"),
        ))
        findings.append(Finding(
            kind="listen-overflow", severity="critical" if rate >= T.LISTEN_OVERFLOW_PER_S_CRITICAL else "warning",
            pod=pod.name,
            summary=(f"{where}: accept queue overflowed {overflows} times ({rate:.1f}/s); "
                     f"the {'somaxconn' if bites == 'somaxconn' else 'listen() backlog'} limit ({current}) bites"),
            evidence=evidence, fixes=tuple(fixes), score=rate,
        ))
    return findings


def detect_syn_backlog_overflow(doc: ProfileDocument, ctx: AnalysisContext) -> list[Finding]:
    findings = []
    for pod in doc.pods:
        syn_drops = pod.counter("TcpExt.TCPReqQFullDrop")
        cookies = pod.counter("TcpExt.TCPReqQFullDoCookies") + pod.counter("TcpExt.SyncookiesSent")
        if syn_drops <= 0 and cookies <= 0:
            continue
        rate = per_s(doc, syn_drops)
        current = to_int(doc.pod_sysctl(pod, "net.ipv4.tcp_max_syn_backlog"))
        syncookies = doc.pod_sysctl(pod, "net.ipv4.tcp_syncookies")
        target = min(T.LISTEN_BACKLOG_MAX, round_up_pow2(max(2 * (current or 512), (current or 512) + rate)))
        evidence = {"syn_queue_drops": syn_drops, "syn_drops_per_s": round(rate, 2),
                    "syncookies_sent": cookies, "tcp_max_syn_backlog": current, "tcp_syncookies": syncookies}
        why = (f"{syn_drops} SYNs were dropped because the SYN queue was full ({rate:.1f}/s), with "
               f"tcp_max_syn_backlog {current}; {target} doubles it. Syncookies (tcp_syncookies=1) keep "
               "accepting when it is full, at the cost of TCP options on those connections.")
        if pod.name != "host":
            fixes = pod_sysctl_fixes(pod.name, netns_path(ctx, pod), "net.ipv4.tcp_max_syn_backlog",
                                     str(current) if current is not None else None, str(target),
                                     f"raise tcp_max_syn_backlog to {target}", why)
        else:
            fixes = node_sysctl_fixes("net.ipv4.tcp_max_syn_backlog", str(current) if current else None,
                                      str(target), f"raise tcp_max_syn_backlog to {target}", why)
        severity = "critical" if rate >= T.SYN_DROPS_PER_S_CRITICAL else ("warning" if syn_drops else "info")
        findings.append(Finding(
            kind="syn-backlog-overflow", severity=severity, pod=pod.name,
            summary=(f"{pod.name}: SYN queue full — {syn_drops} SYNs dropped, {cookies} answered with syncookies"),
            evidence=evidence, fixes=tuple(fixes), score=rate,
        ))
    return findings
