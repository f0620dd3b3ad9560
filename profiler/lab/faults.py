"""Network faults for lab scenarios, as nftables rules inside the lab's own namespaces.

Every rule sits in a table named after the lab prefix, in a namespace the lab made, so
`clear_faults()` (or deleting the namespaces) removes exactly what was added and the host's
ruleset is never touched.

Where the loss is applied matters (design §8): dropping in the *sender's* OUTPUT chain is a
local send error that TCP quietly requeues, producing almost no retransmits. A real network
loses packets on the path, so the drop happens on the bridge in the node namespace: a
`bridge` family table on the forward hook sees every frame going from one pod to another,
exactly where a lossy switch or link would be. Verified on kernel 6.18 + nftables 1.0.6:
`ip saddr <pod> numgen random mod 100 < 50 counter drop` in a bridge forward chain dropped
517 of 1000 UDP datagrams between two lab pods, so the `inet`-input-in-every-receiver
fallback is not needed here. The bridge hook does not need br_netfilter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from profiler.lab import LabError, run_checked
from profiler.lab.sysctl import netns_exists
from profiler.lab.topology import Lab

BRIDGE_CHAIN = "forward"
# numgen draws in [0, LOSS_SCALE): hundredths of a percent, so 0.5% loss is expressible.
LOSS_SCALE = 10_000


@dataclass(frozen=True)
class Fault:
    kind: str               # "loss"
    pod: str                # pod whose outgoing packets are affected
    percent: float
    port: int | None        # TCP destination port filter, None = every packet from the pod
    comment: str            # tags the nft rule, so its counter can be read back


@dataclass(frozen=True)
class FaultCounter:
    comment: str
    packets: int            # packets the rule dropped so far
    bytes: int


def _nft(lab: Lab, script: str) -> None:
    run_checked(["ip", "netns", "exec", lab.node_netns, "nft", "-f", "-"], input_text=script)


def inject_loss(lab: Lab, pod_name: str, percent: float, port: int | None = None) -> Fault:
    """Drop a random `percent` of packets sent by `pod_name` to other pods (to TCP `port` only if given).

    Only pod-to-pod traffic crosses the bridge's forward hook; packets from a pod to the
    node address (198.18.0.1) are delivered locally on the bridge and are not affected.
    """
    if not 0 <= percent <= 100:
        raise LabError(f"loss percent must be within 0..100, got {percent}")
    if port is not None and not 0 < port < 65536:
        raise LabError(f"bad port {port}")
    pod = lab.pods.get(pod_name)
    if pod is None:
        raise LabError(f"lab {lab.prefix} has no pod {pod_name!r}")
    threshold = round(percent * LOSS_SCALE / 100)
    port_match = f"tcp dport {port} " if port is not None else ""
    comment = f"loss {pod_name} {percent:g}% " + (f"dport {port}" if port is not None else "all")
    # One nft transaction: table, chain and rule appear together or not at all. `add` is a
    # no-op for a table/chain that already exists, so faults can be stacked.
    script = (
        f"add table bridge {lab.prefix}\n"
        f"add chain bridge {lab.prefix} {BRIDGE_CHAIN} "
        "{ type filter hook forward priority 0; policy accept; }\n"
        f"add rule bridge {lab.prefix} {BRIDGE_CHAIN} ip saddr {pod.ip} {port_match}"
        f"numgen random mod {LOSS_SCALE} < {threshold} counter drop comment \"{comment}\"\n"
    )
    _nft(lab, script)
    return Fault(kind="loss", pod=pod_name, percent=percent, port=port, comment=comment)


def _table_exists(lab: Lab) -> bool:
    if not netns_exists(lab.node_netns):
        return False  # the namespace, and every rule in it, is already gone
    out = run_checked(["ip", "netns", "exec", lab.node_netns, "nft", "list", "tables"]).stdout
    return f"table bridge {lab.prefix}" in out.splitlines()


def fault_counters(lab: Lab) -> list[FaultCounter]:
    """How many packets each fault rule dropped so far (empty when no fault is active)."""
    if not _table_exists(lab):
        return []
    out = run_checked(
        ["ip", "netns", "exec", lab.node_netns, "nft", "-j", "list", "table", "bridge", lab.prefix]
    ).stdout
    counters = []
    for item in json.loads(out).get("nftables", []):
        rule: dict[str, Any] | None = item.get("rule")
        if not rule:
            continue
        for expr in rule.get("expr", []):
            if "counter" in expr:
                counter = expr["counter"]
                counters.append(FaultCounter(
                    comment=rule.get("comment", ""),
                    packets=int(counter.get("packets", 0)),
                    bytes=int(counter.get("bytes", 0)),
                ))
    return counters


def clear_faults(lab: Lab) -> None:
    """Remove every fault of this lab (idempotent)."""
    if _table_exists(lab):
        _nft(lab, f"delete table bridge {lab.prefix}\n")
