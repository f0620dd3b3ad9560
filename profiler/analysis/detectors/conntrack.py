"""Conntrack (sources/conntrack.py → pods[].conntrack): insert races, and a table that is
full or filling."""
from __future__ import annotations

from ...document import ProfileDocument
from .. import thresholds as T
from ..findings import Finding, Fix
from ..fixes import node_sysctl_fixes, round_up_pow2
from .base import AnalysisContext, per_s


def detect_conntrack(doc: ProfileDocument, ctx: AnalysisContext) -> list[Finding]:
    findings = []
    node_max = doc.sysctl_int("net.netfilter.nf_conntrack_max")
    buckets = doc.sysctl_int("net.netfilter.nf_conntrack_buckets")
    for pod in doc.pods:
        ct = pod.conntrack
        failed = ct.get("insert_failed", 0)
        if failed > 0:
            rate = per_s(doc, failed)
            evidence = {"insert_failed": failed, "insert_failed_per_s": round(rate, 2),
                        "clash_resolve": ct.get("clash_resolve", 0), "drop": ct.get("drop", 0)}
            findings.append(Finding(
                kind="conntrack-insert-failed",
                severity="critical" if rate >= T.CONNTRACK_INSERT_FAILED_PER_S_CRITICAL else "warning",
                pod=pod.name,
                summary=(f"{pod.name}: {failed} conntrack insert failures ({rate:.1f}/s) — two packets of one "
                         "new flow raced through conntrack on two CPUs; the loser was dropped"),
                evidence=evidence, score=rate,
                fixes=(
                    Fix(scope="pod", title="stop the parallel DNS A/AAAA race",
                        rationale=("The classic cause on Kubernetes is glibc/musl sending the A and AAAA "
                                   "queries of one lookup from one socket at once, through DNAT to the DNS "
                                   "service: both create the same conntrack entry on different CPUs. "
                                   "`single-request-reopen` sends them from different sockets; `use-vc` "
                                   "(glibc) uses TCP. Recent kernels resolve UDP clashes (clash_resolve "
                                   f"counted {ct.get('clash_resolve', 0)} here); failures that remain are "
                                   "TCP or other protocols racing the same way."),
                        snippet=("spec:\n  dnsConfig:\n    options:\n    - name: single-request-reopen\n"
                                 "    # or, glibc only: - name: use-vc\n")),
                    Fix(scope="node", title="run NodeLocal DNSCache",
                        rationale=("A node-local DNS cache answers pods without DNAT, and talks upstream over "
                                   "TCP: the race disappears for DNS entirely."),
                        commands=("kubectl apply -f nodelocaldns.yaml   # see kubernetes.io: NodeLocal DNSCache",)),
                ),
            ))
        dropped = ct.get("drop", 0) + ct.get("early_drop", 0)
        count_now, max_now = ct.get("count_now"), ct.get("max_now") or node_max
        fill = (count_now / max_now) if count_now is not None and max_now else None
        if dropped > 0 or (fill is not None and fill >= T.CONNTRACK_FILL_WARNING):
            rate = per_s(doc, dropped)
            current = max_now or node_max or 65536
            peak = max(count_now or 0, current)
            target = min(T.CONNTRACK_MAX_CAP, round_up_pow2(2 * peak))
            evidence = {"drop": ct.get("drop", 0), "early_drop": ct.get("early_drop", 0),
                        "drops_per_s": round(rate, 2), "count_now": count_now, "nf_conntrack_max": current,
                        "nf_conntrack_buckets": buckets, "fill": round(fill, 3) if fill is not None else None}
            why = (f"the conntrack table is full: {dropped} new flows were refused ({rate:.1f}/s) at "
                   f"nf_conntrack_max={current}. {target} is twice the peak; each entry costs ~300 bytes "
                   f"(≈{target * 300 // 2**20} MiB). nf_conntrack_max is node-global: one pod's flows can "
                   "fill it for everyone. Also check timeouts (nf_conntrack_udp_timeout, "
                   "nf_conntrack_tcp_timeout_established, 5 days by default) for flows kept too long.")
            fixes = list(node_sysctl_fixes("net.netfilter.nf_conntrack_max", str(current), str(target),
                                               f"raise nf_conntrack_max to {target}", why))
            if buckets is not None and buckets < target // 4:
                fixes.append(Fix(scope="node", title=f"hash buckets: {target // 4}",
                                 rationale=(f"with {target} entries and {buckets} buckets the chains average "
                                            f"{target / buckets:.1f}; max/4 keeps lookups short."),
                                 commands=(f"echo {target // 4} > /sys/module/nf_conntrack/parameters/hashsize",),
                                 persistence="options nf_conntrack hashsize=… in /etc/modprobe.d/"))
            findings.append(Finding(
                kind="conntrack-table-full", severity="critical" if dropped else "warning", pod=pod.name,
                summary=(f"{pod.name}: conntrack table full — {dropped} new flows dropped"
                         if dropped else f"{pod.name}: conntrack table {100 * fill:.0f}% full"),
                evidence=evidence, fixes=tuple(fixes), score=rate,
            ))
    return findings
