"""Building blocks of fixes: how to change a sysctl in the right place, and persist it.

Where a sysctl lives decides the fix (design notes §6). Node-global ones are set on the node
and persisted in /etc/sysctl.d (or by a privileged DaemonSet). Per-netns ones must be set in
the pod's own namespace: at runtime with `nsenter`, which is lost when the pod restarts, and
durably in the pod spec's `securityContext.sysctls`.
"""
from __future__ import annotations

from ..inert import inert
from .findings import Change, Fix

# Every sysctl a fix of netprof's detectors may change, and no other. `netprof fix` applies
# only these (profiler.fix.command.applicable; the rollback of a journal holds to them too):
# net.* also holds ip_forward, accept_redirects, rp_filter, bpf_jit_harden, which no finding
# of netprof is about. A detector that needs another sysctl adds it here, with its finding.
NODE_SYSCTLS_FIXED = frozenset({
    "net.core.somaxconn",             # listen-overflow on the host
    "net.ipv4.tcp_max_syn_backlog",   # syn-backlog-overflow on the host
    "net.core.netdev_budget",         # napi-budget-exhausted
    "net.core.netdev_budget_usecs",   # napi-budget-exhausted
    "net.core.netdev_max_backlog",    # cpu-backlog-drops
    "net.netfilter.nf_conntrack_max",  # conntrack-table-full
    "net.core.rmem_max",              # socket-rcvbuf-drops
})
POD_SYSCTLS_FIXED = frozenset({
    "net.core.somaxconn",             # listen-overflow in a pod
    "net.ipv4.tcp_max_syn_backlog",   # syn-backlog-overflow in a pod
})
APPLICABLE_SYSCTLS = NODE_SYSCTLS_FIXED | POD_SYSCTLS_FIXED

# Kubernetes' "safe" sysctls (kubelet allows them without --allowed-unsafe-sysctls), as of 1.29.
K8S_SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout",
    "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
})


def round_up_pow2(value: float) -> int:
    value = max(1, int(value) + (0 if float(value).is_integer() else 1))
    return 1 << (value - 1).bit_length()


SYSCTL_D_FILE = "/etc/sysctl.d/90-netprof.conf"


def node_sysctl_fixes(key: str, current: str | None, value: str, title: str, rationale: str) -> tuple[Fix, ...]:
    """A node-global sysctl: applied now on the node, persisted in sysctl.d."""
    if key not in NODE_SYSCTLS_FIXED:
        raise ValueError(f"{key} is not in NODE_SYSCTLS_FIXED: add it there with the finding that sets it")
    return (Fix(
        scope="node",
        title=title,
        rationale=rationale,
        commands=(f"sysctl -w {key}={value}",),
        changes=(Change("sysctl", key, value, netns=None, expected_current=current),),
        persistence=(f"echo '{key} = {value}' >> {SYSCTL_D_FILE} && sysctl --system  "
                     "(on Kubernetes nodes: the node image / machine config, or a privileged "
                     "DaemonSet that writes it at boot)"),
    ),)


def pod_sysctl_fixes(pod: str, netns_path: str | None, key: str, current: str | None, value: str,
                     title: str, rationale: str) -> tuple[Fix, ...]:
    """A per-netns sysctl for one pod: the durable pod-spec change, and a runtime stopgap."""
    if key not in POD_SYSCTLS_FIXED:
        raise ValueError(f"{key} is not in POD_SYSCTLS_FIXED: add it there with the finding that sets it")
    unsafe = key not in K8S_SAFE_SYSCTLS
    note = (f"\n{key} is not in Kubernetes' safe set: the kubelet must run with "
            f"--allowed-unsafe-sysctls={key} (or a pattern like 'net.core.*') on the node pool."
            if unsafe else "")
    # The pod's name comes from the capture: inert, so a line break in it cannot add YAML.
    yaml = (f"# pod spec of {inert(pod)}\n"
            "spec:\n"
            "  securityContext:\n"
            "    sysctls:\n"
            f"    - name: {key}\n"
            f"      value: \"{value}\"\n")
    durable = Fix(scope="pod", title=f"{title} (pod spec)", rationale=rationale + note,
                  persistence="the pod spec: every restart of the pod keeps it", snippet=yaml)
    fixes = [durable]
    if netns_path:
        fixes.append(Fix(
            scope="node",
            title=f"{title} now, in the running pod's netns",
            rationale=rationale + "\nThis changes the running pod's network namespace only; "
                                  "it is lost when the pod is recreated — the pod-spec fix is the durable one.",
            commands=(f"nsenter --net={netns_path} sysctl -w {key}={value}",),
            changes=(Change("sysctl", key, value, netns=netns_path, expected_current=current),),
            persistence="none: use the pod-spec fix",
        ))
    return tuple(fixes)
