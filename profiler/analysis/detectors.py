"""Detectors: a capture (its profile JSON) → findings with evidence and fixes.

They read the profile JSON, the stable contract, so a live capture and a saved one
(`netprof fix --from capture.json`) are judged by the same code. Every threshold is a rate
over the capture and lives in thresholds.py with its reasoning (docs/findings.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from . import thresholds as T
from .findings import Finding, Fix, rank
from ..system.irqs import landing_cpus_text, parse_cpu_list
from .fixes import node_sysctl_fixes, pod_sysctl_fixes, round_up_pow2


@dataclass(frozen=True)
class AnalysisContext:
    """What detectors may know beyond the capture: only available on the live node."""

    netns_paths: dict[int, str] = field(default_factory=dict)  # netns inode → path to enter it
    topology: Any = None             # profiler.system.irqs.IrqTopology of this node, if live
    irqbalance_running: bool = False
    root: Path = Path("/")


class Capture:
    """Convenient, read-only access to a profile JSON document."""

    def __init__(self, doc: dict):
        self.doc = doc
        self.duration_s = max(float(doc.get("duration_s") or 0.0), 1e-9)
        self.node = doc.get("node") or {}
        self.sysctls: dict[str, str] = self.node.get("sysctls", {})
        self.pod_sysctls: dict[str, dict[str, str]] = self.node.get("pod_sysctls", {})

    @property
    def pods(self) -> list[dict]:
        return self.doc.get("pods", [])

    @property
    def cpus(self) -> list[dict]:
        return self.doc.get("cpus", [])

    def per_s(self, count: float) -> float:
        return count / self.duration_s

    def pod_sysctl(self, pod: dict, key: str) -> str | None:
        return self.pod_sysctls.get(str(pod["netns"]), {}).get(key)

    def node_sysctl_int(self, key: str) -> int | None:
        try:
            return int(self.sysctls[key])
        except (KeyError, ValueError):
            return None


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _netns_path(ctx: AnalysisContext, pod: dict) -> str | None:
    return ctx.netns_paths.get(pod["netns"])


# --- TCP retransmits ----------------------------------------------------------------------------

def _flow_tuple(row: dict) -> tuple[str, int, str, int]:
    return (str(row.get("saddr")), int(row.get("sport", 0)), str(row.get("daddr")), int(row.get("dport", 0)))


def drops_on_path(cap: Capture, flows: list[dict]) -> list[dict]:
    """Drops of these flows' own packets, wherever on the node they happened: the dropped
    packet's 4-tuple is the flow's (data lost: "data") or its reverse (ACKs lost: "acks").
    Busiest first, reasons that are consequences of loss left out."""
    directions: dict[tuple[str, int, str, int], str] = {}
    for flow in flows:
        forward = _flow_tuple(flow)
        directions[forward] = "data"
        directions.setdefault((forward[2], forward[3], forward[0], forward[1]), "acks")
    found: dict[tuple[str, str, str, str], int] = {}
    for row in cap.doc.get("flow_drops", []):
        direction = directions.get(_flow_tuple(row))
        if direction is None or row.get("reason") in T.DROPS_NOT_A_CAUSE_OF_LOSS:
            continue
        key = (str(row.get("pod")), str(row.get("reason")), str(row.get("symbol")), direction)
        found[key] = found.get(key, 0) + int(row.get("count", 0))
    return [{"where": where, "reason": reason, "site": site, "direction": direction, "count": count}
            for (where, reason, site, direction), count in sorted(found.items(), key=lambda item: -item[1])]


def _loss_fix(pod: dict, drop: dict, ctx: AnalysisContext, drop_netns: dict[str, int]) -> Fix:
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
    return Fix(scope="app" if where == pod["pod"] else "node", title=title, rationale=rationale, commands=commands)


def detect_tcp_retransmits(cap: Capture, ctx: AnalysisContext) -> list[Finding]:
    findings = []
    flows_by_pod: dict[int, list[dict]] = {}
    for flow in cap.doc.get("flows", []):
        flows_by_pod.setdefault(flow.get("netns", -1), []).append(flow)
    drop_netns = {str(row.get("pod")): int(row.get("netns", -1)) for row in cap.doc.get("flow_drops", [])}
    for pod in cap.pods:
        segments = pod.get("retransmitted_segments") or pod.get("retransmits", 0)
        if pod.get("retransmits", 0) < T.RETRANS_MIN_COUNT:
            continue
        rate = cap.per_s(segments)
        sent = pod.get("netstat", {}).get("Tcp.OutSegs")
        evidence: dict[str, Any] = {
            "retransmitted_skbs": pod["retransmits"], "retransmitted_segments": segments,
            "retransmitted_segments_per_s": round(rate, 2), "capture_s": round(cap.duration_s, 2),
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
        pod_flows = flows_by_pod.get(pod["netns"], [])
        flows = sorted(pod_flows, key=lambda f: -f["retransmits"])[:5]
        evidence["top_flows"] = [
            f"{f['saddr']}:{f['sport']} → {f['daddr']}:{f['dport']} ({f['retransmits']})" for f in flows]
        peers = sorted({f["daddr"] for f in flows})
        drops = {k: v for k, v in pod.get("drops", {}).items() if v}
        if drops:
            evidence["drops_in_pod"] = drops
        on_path = drops_on_path(cap, pod_flows)
        fixes = []
        cause = ""
        if on_path:
            evidence["drops_on_path"] = [
                f"{d['reason']} at {d['site']} in {d['where']}: {d['count']} ({d['direction']})" for d in on_path[:5]]
            top = on_path[0]
            if top["count"] >= T.DROPS_EXPLAIN_RETRANS_MIN_SHARE * pod["retransmits"]:
                cause = f"; {top['reason']} at {top['site']} in {top['where']} dropped {top['count']} of its packets"
                fixes.append(_loss_fix(pod, top, ctx, drop_netns))
        fixes.append(Fix(
            scope="app",
            title="find where the path loses packets",
            rationale=(f"{pod['pod']} retransmits {how_bad}: TCP is recovering lost packets, not "
                       "misconfigured. The loss is on the path to "
                       + (", ".join(peers) if peers else "its peers")
                       + ". Retransmits concentrated on one peer point at that peer or its node; "
                       "spread over all peers, at this pod's own node or NIC (see drops and softirq)."),
            commands=tuple(
                [f"nsenter --net={_netns_path(ctx, pod)} ss -tin dst {peer}" for peer in peers[:3]
                 if _netns_path(ctx, pod)] +
                ["netprof profile --duration 30   # on the peer's node: is it dropping?"]),
        ))
        findings.append(Finding(
            kind="tcp-retransmits", severity=severity, pod=pod["pod"],
            summary=(f"{pod['pod']} retransmits {how_bad} ({pod['retransmits']} retransmits in "
                     f"{cap.duration_s:.0f}s){cause}"),
            evidence=evidence, fixes=tuple(fixes), score=rate,
        ))
    return findings


# --- listen queue -------------------------------------------------------------------------------

def detect_listen_overflow(cap: Capture, ctx: AnalysisContext) -> list[Finding]:
    findings = []
    for pod in cap.pods:
        overflows = pod.get("netstat", {}).get("TcpExt.ListenOverflows", 0)
        listeners = pod.get("listen", [])
        by_drops = sum(l.get("overflow_drops", 0) for l in listeners)
        overflows = max(overflows, by_drops)
        if overflows <= 0:
            continue
        # The listener to blame: the one whose queue hit its limit, most overflow drops first.
        full = sorted(listeners, key=lambda l: (-l.get("overflow_drops", 0), -l.get("samples_full", 0),
                                                -(l.get("accept_queue_peak", 0) / max(1, l.get("accept_queue_limit", 1)))))
        listener = full[0] if full else None
        rate = cap.per_s(overflows)
        somaxconn = _int(cap.pod_sysctl(pod, "net.core.somaxconn"))
        if listener and listener.get("somaxconn") is not None:
            somaxconn = listener["somaxconn"]
        limit = listener.get("accept_queue_limit") if listener else None
        asked = listener.get("requested_backlog") if listener else None
        evidence: dict[str, Any] = {
            "listen_overflows": overflows, "overflows_per_s": round(rate, 2),
            "listen_drops": pod.get("netstat", {}).get("TcpExt.ListenDrops", 0),
            "somaxconn": somaxconn,
        }
        where = pod["pod"]
        if listener:
            where = f"{pod['pod']} {listener['address']}:{listener['port']}"
            evidence.update(listener=f"{listener['address']}:{listener['port']}",
                            accept_queue_peak=listener.get("accept_queue_peak"),
                            accept_queue_limit=limit, requested_backlog=asked,
                            samples_full=listener.get("samples_full"))
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
        is_host = pod["pod"] == "host"
        if bites == "somaxconn" or (somaxconn is not None and target > somaxconn):
            key = "net.core.somaxconn"
            if is_host:
                fixes += node_sysctl_fixes(key, str(somaxconn) if somaxconn is not None else None,
                                               str(target), f"raise {key} to {target}", why)
            else:
                fixes += pod_sysctl_fixes(pod["pod"], _netns_path(ctx, pod), key,
                                          str(somaxconn) if somaxconn is not None else None, str(target),
                                          f"raise {key} to {target} in {pod['pod']}", why)
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
            pod=pod["pod"],
            summary=(f"{where}: accept queue overflowed {overflows} times ({rate:.1f}/s); "
                     f"the {'somaxconn' if bites == 'somaxconn' else 'listen() backlog'} limit ({current}) bites"),
            evidence=evidence, fixes=tuple(fixes), score=rate,
        ))
    return findings


def detect_syn_backlog_overflow(cap: Capture, ctx: AnalysisContext) -> list[Finding]:
    findings = []
    for pod in cap.pods:
        netstat = pod.get("netstat", {})
        syn_drops = netstat.get("TcpExt.TCPReqQFullDrop", 0)
        cookies = netstat.get("TcpExt.TCPReqQFullDoCookies", 0) + netstat.get("TcpExt.SyncookiesSent", 0)
        if syn_drops <= 0 and cookies <= 0:
            continue
        rate = cap.per_s(syn_drops)
        current = _int(cap.pod_sysctl(pod, "net.ipv4.tcp_max_syn_backlog"))
        syncookies = cap.pod_sysctl(pod, "net.ipv4.tcp_syncookies")
        target = min(T.LISTEN_BACKLOG_MAX, round_up_pow2(max(2 * (current or 512), (current or 512) + rate)))
        evidence = {"syn_queue_drops": syn_drops, "syn_drops_per_s": round(rate, 2),
                    "syncookies_sent": cookies, "tcp_max_syn_backlog": current, "tcp_syncookies": syncookies}
        why = (f"{syn_drops} SYNs were dropped because the SYN queue was full ({rate:.1f}/s), with "
               f"tcp_max_syn_backlog {current}; {target} doubles it. Syncookies (tcp_syncookies=1) keep "
               "accepting when it is full, at the cost of TCP options on those connections.")
        fixes = pod_sysctl_fixes(pod["pod"], _netns_path(ctx, pod), "net.ipv4.tcp_max_syn_backlog",
                                 str(current) if current is not None else None, str(target),
                                 f"raise tcp_max_syn_backlog to {target}", why) if pod["pod"] != "host" else \
            node_sysctl_fixes("net.ipv4.tcp_max_syn_backlog", str(current) if current else None, str(target),
                                  f"raise tcp_max_syn_backlog to {target}", why)
        severity = "critical" if rate >= T.SYN_DROPS_PER_S_CRITICAL else ("warning" if syn_drops else "info")
        findings.append(Finding(
            kind="syn-backlog-overflow", severity=severity, pod=pod["pod"],
            summary=(f"{pod['pod']}: SYN queue full — {syn_drops} SYNs dropped, {cookies} answered with syncookies"),
            evidence=evidence, fixes=tuple(fixes), score=rate,
        ))
    return findings


# --- CPUs: softirq, NAPI, backlog ------------------------------------------------------------------

def _online_cpus(cap: Capture) -> set[int]:
    try:
        return set(parse_cpu_list(str(cap.node.get("cpus_online") or "")))
    except ValueError:
        return set()


def _net_softirq_share(cap: Capture) -> dict[int, float]:
    # Every online CPU is in the comparison, the idle ones at 0: the capture lists only CPUs
    # that did network work, and the worst imbalance -- every queue IRQ on one CPU, the others
    # doing nothing -- would otherwise leave one CPU to compare with nobody.
    shares = dict.fromkeys(_online_cpus(cap), 0.0)
    for cpu in cap.cpus:
        softirq = cpu.get("softirq", {})
        busy_ns = sum(softirq.get(v, {}).get("time_ns", 0) for v in ("NET_RX", "NET_TX"))
        shares[cpu["cpu"]] = busy_ns / (cap.duration_s * 1e9)
    return shares


def detect_softirq_imbalance(cap: Capture, ctx: AnalysisContext) -> list[Finding]:
    shares = _net_softirq_share(cap)
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
    queues_here = []
    for nic in cap.node.get("nics", []):
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
    if queues_here:
        evidence["nic_queue_irqs_on_cpu"] = queues_here
    fixes: list[Fix] = []
    if ctx.topology is not None:
        from .irq_plan import plan_irq_affinity

        rx_share = dict.fromkeys(_online_cpus(cap), 0.0)
        rx_share.update({cpu["cpu"]: cpu.get("softirq", {}).get("NET_RX", {}).get("time_ns", 0) / (cap.duration_s * 1e9)
                         for cpu in cap.cpus})
        plan = plan_irq_affinity(ctx.topology, irqbalance_running=ctx.irqbalance_running,
                                 net_rx_share_by_cpu=rx_share, root=ctx.root)
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


def detect_napi_budget(cap: Capture, ctx: AnalysisContext) -> list[Finding]:
    findings = []
    budget = cap.node_sysctl_int("net.core.netdev_budget")
    usecs = cap.node_sysctl_int("net.core.netdev_budget_usecs")
    for cpu in cap.cpus:
        polls = sum(d.get("polls", 0) for d in cpu.get("napi", []))
        exhausted = sum(d.get("budget_exhausted", 0) for d in cpu.get("napi", []))
        squeeze = cpu.get("softnet", {}).get("time_squeeze", 0)
        share = exhausted / polls if polls else 0.0
        squeeze_rate = cap.per_s(squeeze)
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
                f"{100 * share:.0f}% of NAPI polls on CPU {cpu['cpu']} used their whole budget and the "
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
            kind="napi-budget-exhausted", severity="warning", cpu=cpu["cpu"],
            summary=(f"CPU {cpu['cpu']}: {100 * share:.0f}% of NAPI polls exhausted their budget, "
                     f"{squeeze_rate:.1f} time squeezes/s"),
            evidence=evidence, fixes=tuple(fixes), score=squeeze_rate,
        ))
    return findings


def detect_cpu_backlog_drops(cap: Capture, ctx: AnalysisContext) -> list[Finding]:
    # softnet_stat charges the CPU whose backlog was full; the tracepoint fires on the CPU
    # that tried to enqueue. The full backlog is what the fix is about: prefer softnet.
    full_backlog = {cpu["cpu"]: cpu.get("softnet", {}).get("dropped", 0) for cpu in cap.cpus}
    enqueuing = {cpu["cpu"]: cpu.get("drops", {}).get("CPU_BACKLOG", 0) for cpu in cap.cpus}
    by_cpu = full_backlog if any(full_backlog.values()) else enqueuing
    total = max(sum(full_backlog.values()), sum(enqueuing.values()),
                sum(p.get("drops", {}).get("CPU_BACKLOG", 0) for p in cap.pods))
    if total <= 0:
        return []
    rate = cap.per_s(total)
    current = cap.node_sysctl_int("net.core.netdev_max_backlog") or 1000
    target = min(T.NETDEV_MAX_BACKLOG_MAX, round_up_pow2(max(2 * current, current + rate)))
    pods = {p["pod"]: p["drops"]["CPU_BACKLOG"] for p in cap.pods if p.get("drops", {}).get("CPU_BACKLOG")}
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


# --- conntrack ------------------------------------------------------------------------------------

def detect_conntrack(cap: Capture, ctx: AnalysisContext) -> list[Finding]:
    findings = []
    node_max = cap.node_sysctl_int("net.netfilter.nf_conntrack_max")
    buckets = cap.node_sysctl_int("net.netfilter.nf_conntrack_buckets")
    for pod in cap.pods:
        ct = pod.get("conntrack", {})
        failed = ct.get("insert_failed", 0)
        if failed > 0:
            rate = cap.per_s(failed)
            evidence = {"insert_failed": failed, "insert_failed_per_s": round(rate, 2),
                        "clash_resolve": ct.get("clash_resolve", 0), "drop": ct.get("drop", 0)}
            findings.append(Finding(
                kind="conntrack-insert-failed",
                severity="critical" if rate >= T.CONNTRACK_INSERT_FAILED_PER_S_CRITICAL else "warning",
                pod=pod["pod"],
                summary=(f"{pod['pod']}: {failed} conntrack insert failures ({rate:.1f}/s) — two packets of one "
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
            rate = cap.per_s(dropped)
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
                kind="conntrack-table-full", severity="critical" if dropped else "warning", pod=pod["pod"],
                summary=(f"{pod['pod']}: conntrack table full — {dropped} new flows dropped"
                         if dropped else f"{pod['pod']}: conntrack table {100 * fill:.0f}% full"),
                evidence=evidence, fixes=tuple(fixes), score=rate,
            ))
    return findings


# --- socket receive buffers -------------------------------------------------------------------------

def detect_rcvbuf_drops(cap: Capture, ctx: AnalysisContext) -> list[Finding]:
    findings = []
    rmem_max = cap.node_sysctl_int("net.core.rmem_max")
    rmem_default = cap.node_sysctl_int("net.core.rmem_default")
    for pod in cap.pods:
        drops = pod.get("drops", {}).get("SOCKET_RCVBUFF", 0)
        drops = max(drops, pod.get("rcvqueue_full", 0), pod.get("netstat", {}).get("Udp.RcvbufErrors", 0))
        if drops <= 0:
            continue
        rate = cap.per_s(drops)
        evidence = {"rcvbuf_drops": drops, "rcvbuf_drops_per_s": round(rate, 2),
                    "rmem_default": rmem_default, "rmem_max": rmem_max,
                    "udp_rcvbuf_errors": pod.get("netstat", {}).get("Udp.RcvbufErrors")}
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
            severity="critical" if rate >= T.RCVBUF_DROPS_PER_S_CRITICAL else "warning", pod=pod["pod"],
            summary=f"{pod['pod']}: {drops} packets dropped at full socket receive buffers ({rate:.1f}/s)",
            evidence=evidence, fixes=tuple(fixes), score=rate,
        ))
    return findings


DETECTORS: tuple[Callable[[Capture, AnalysisContext], list[Finding]], ...] = (
    detect_listen_overflow,
    detect_syn_backlog_overflow,
    detect_softirq_imbalance,
    detect_napi_budget,
    detect_cpu_backlog_drops,
    detect_conntrack,
    detect_rcvbuf_drops,
    detect_tcp_retransmits,
)


def analyze(doc: dict, ctx: AnalysisContext | None = None,
            detectors: Iterable[Callable[[Capture, AnalysisContext], list[Finding]]] = DETECTORS) -> list[Finding]:
    cap = Capture(doc)
    ctx = ctx or AnalysisContext()
    findings: list[Finding] = []
    for detect in detectors:
        findings.extend(detect(cap, ctx))
    return rank(findings)
