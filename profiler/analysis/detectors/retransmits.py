"""TCP retransmits (probes/retransmits.py → sources → pods[].retransmits, flows[]): a pod
that retransmits a share of its segments, the flows and peers, and the drops of those
flows' own packets anywhere on the node that explain the loss."""
from __future__ import annotations

from typing import Any

from ...document import PodView, ProfileDocument
from .. import thresholds as T
from ..findings import Finding, Fix
from .base import AnalysisContext, capture_s, netns_path, per_s


def _flow_tuple(row: dict) -> tuple[str, int, str, int]:
    return (str(row.get("saddr")), int(row.get("sport", 0)), str(row.get("daddr")), int(row.get("dport", 0)))


def drops_on_path(doc: ProfileDocument, flows: list[dict]) -> list[dict]:
    """Drops of these flows' own packets, wherever on the node they happened: the dropped
    packet's 4-tuple is the flow's (data lost: "data") or its reverse (ACKs lost: "acks").
    Busiest first, reasons that are consequences of loss left out."""
    directions: dict[tuple[str, int, str, int], str] = {}
    for flow in flows:
        forward = _flow_tuple(flow)
        directions[forward] = "data"
        directions.setdefault((forward[2], forward[3], forward[0], forward[1]), "acks")
    found: dict[tuple[str, str, str, str], int] = {}
    for row in doc.flow_drops:
        direction = directions.get(_flow_tuple(row))
        if direction is None or row.get("reason") in T.DROPS_NOT_A_CAUSE_OF_LOSS:
            continue
        key = (str(row.get("pod")), str(row.get("reason")), str(row.get("symbol")), direction)
        found[key] = found.get(key, 0) + int(row.get("count", 0))
    return [{"where": where, "reason": reason, "site": site, "direction": direction, "count": count}
            for (where, reason, site, direction), count in sorted(found.items(), key=lambda item: -item[1])]


def _loss_fix(pod: PodView, drop: dict, ctx: AnalysisContext, drop_netns: dict[str, int]) -> Fix:
    """The fix when netprof saw where the flow's packets were dropped."""
    where, reason, site = drop["where"], drop["reason"], drop["site"]
    lost = "its packets" if drop["direction"] == "data" else "the ACKs it is sent"
    path = ctx.netns_paths.get(drop_netns.get(where, -1))
    enter = f"nsenter --net={path} " if path else ""
    if reason == "NETFILTER_DROP":
        rationale = (f"{drop['count']} of {lost} were dropped by a netfilter rule in {where} ({site}): a "
                     "NetworkPolicy, kube-proxy or a firewall rule there refuses this traffic. Find the rule "
                     "whose counter grows while the pod retransmits.")
        commands = (f"{enter}nft list ruleset", f"{enter}iptables-save -c")
        title = f"find the netfilter rule in {where} that drops this pod's traffic"
    else:
        rationale = (f"{drop['count']} of {lost} were dropped in {where} with reason {reason} at {site} "
                     "(docs/findings.md and the kernel's enum skb_drop_reason say what it means): that drop, "
                     "not TCP, is what to fix.")
        commands = (f"netprof profile --duration 30   # drops by reason and site, {where} among them",)
        title = f"stop the {reason} drops in {where}"
    return Fix(scope="app" if where == pod.name else "node", title=title, rationale=rationale, commands=commands)


def detect_tcp_retransmits(doc: ProfileDocument, ctx: AnalysisContext) -> list[Finding]:
    findings = []
    flows_by_pod: dict[int, list[dict]] = {}
    for flow in doc.flows:
        flows_by_pod.setdefault(flow.get("netns", -1), []).append(flow)
    drop_netns = {str(row.get("pod")): int(row.get("netns", -1)) for row in doc.flow_drops}
    for pod in doc.pods:
        segments = pod.retransmitted_segments_or_skbs
        if pod.retransmits < T.RETRANS_MIN_COUNT:
            continue
        rate = per_s(doc, segments)
        sent = pod.netstat.get("Tcp.OutSegs")
        evidence: dict[str, Any] = {
            "retransmitted_skbs": pod.retransmits, "retransmitted_segments": segments,
            "retransmitted_segments_per_s": round(rate, 2), "capture_s": round(capture_s(doc), 2),
        }
        if sent:
            ratio = segments / sent
            evidence.update(sent_segments=sent, retransmit_ratio=round(ratio, 4))
            severity = ("critical" if ratio >= T.RETRANS_RATIO_CRITICAL else
                        "warning" if ratio >= T.RETRANS_RATIO_WARNING else None)
            how_bad = f"{100 * ratio:.1f}% of its TCP segments"
        else:
            severity = ("critical" if rate >= T.RETRANS_PER_S_CRITICAL else
                        "warning" if rate >= T.RETRANS_PER_S_WARNING else None)
            how_bad = f"{rate:.0f} segments/s"
        if severity is None:
            continue
        pod_flows = flows_by_pod.get(pod.netns, [])
        flows = sorted(pod_flows, key=lambda f: -f["retransmits"])[:5]
        evidence["top_flows"] = [
            f"{f['saddr']}:{f['sport']} → {f['daddr']}:{f['dport']} ({f['retransmits']})" for f in flows]
        peers = sorted({f["daddr"] for f in flows})
        drops = {k: v for k, v in pod.drops.items() if v}
        if drops:
            evidence["drops_in_pod"] = drops
        on_path = drops_on_path(doc, pod_flows)
        fixes = []
        cause = ""
        if on_path:
            evidence["drops_on_path"] = [
                f"{d['reason']} at {d['site']} in {d['where']}: {d['count']} ({d['direction']})" for d in on_path[:5]]
            top = on_path[0]
            if top["count"] >= T.DROPS_EXPLAIN_RETRANS_MIN_SHARE * pod.retransmits:
                cause = f"; {top['reason']} at {top['site']} in {top['where']} dropped {top['count']} of its packets"
                fixes.append(_loss_fix(pod, top, ctx, drop_netns))
        path = netns_path(ctx, pod)
        fixes.append(Fix(
            scope="app",
            title="find where the path loses packets",
            rationale=(f"{pod.name} retransmits {how_bad}: TCP is recovering lost packets, not "
                       "misconfigured. The loss is on the path to "
                       + (", ".join(peers) if peers else "its peers")
                       + ". Retransmits concentrated on one peer point at that peer or its node; "
                       "spread over all peers, at this pod's own node or NIC (see drops and softirq)."),
            commands=tuple(
                [f"nsenter --net={path} ss -tin dst {peer}" for peer in peers[:3] if path] +
                ["netprof profile --duration 30   # on the peer's node: is it dropping?"]),
        ))
        findings.append(Finding(
            kind="tcp-retransmits", severity=severity, pod=pod.name,
            summary=(f"{pod.name} retransmits {how_bad} ({pod.retransmits} retransmits in "
                     f"{capture_s(doc):.0f}s){cause}"),
            evidence=evidence, fixes=tuple(fixes), score=rate,
        ))
    return findings
