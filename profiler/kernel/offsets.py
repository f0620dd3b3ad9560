"""Kernel struct offsets and enums that BPF programs need, read from BTF.

Each offset enters the C code as a -D macro, so the programs stay free of kernel struct
definitions and correct on every kernel that has BTF (borrowed headers from another kernel
give wrong offsets: the Debian 6.1 headers disagree with 6.18 on struct net).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

from .btf import Btf

# macro → (struct, dotted member paths whose offsets are summed). Paths walk nested structs.
OFFSET_MACROS: dict[str, tuple[tuple[str, str], ...]] = {
    "NETPROF_SOCK_NET_OFFSET": (("sock", "__sk_common.skc_net"),),
    "NETPROF_NET_INUM_OFFSET": (("net", "ns"), ("ns_common", "inum")),
    # TCP keeps its per-skb control block in skb->cb; tcp_gso_segs is tcp_skb_pcount(),
    # the number of MSS segments the skb carries (what RetransSegs adds per retransmit).
    "NETPROF_SKB_TCP_GSO_SEGS_OFFSET": (("sk_buff", "cb"), ("tcp_skb_cb", "tcp_gso_segs")),
    # A dropped skb with no receiving socket is charged to its owning socket's namespace
    # (skb->sk), else to its device's (skb->dev->nd_net; nd_net is a possible_net_t
    # holding one struct net pointer).
    "NETPROF_SKB_DEV_OFFSET": (("sk_buff", "dev"),),
    "NETPROF_SKB_SK_OFFSET": (("sk_buff", "sk"),),
    "NETPROF_NETDEV_NET_OFFSET": (("net_device", "nd_net"),),
    # Local port of a socket, host byte order (a listener's port for listen overflows).
    "NETPROF_SOCK_NUM_OFFSET": (("sock", "__sk_common.skc_num"),),
    # A socket's address family: what tcp_retransmit_skb's record says itself since 5.11
    # (bpf/retransmits.bpf.c reads it from the socket before that).
    "NETPROF_SOCK_FAMILY_OFFSET": (("sock", "__sk_common.skc_family"),),
    # napi_poll names the device but not its netns, and every pod has an "eth0":
    # napi->dev, then NETPROF_NETDEV_NET_OFFSET (bpf/napi.bpf.c).
    "NETPROF_NAPI_DEV_OFFSET": (("napi_struct", "dev"),),
    # The raw napi_poll tracepoint hands over the napi_struct, not the record's dev_name:
    # the name is read from napi->dev->name, as the tracepoint itself does.
    "NETPROF_NETDEV_NAME_OFFSET": (("net_device", "name"),),
    # A dropped TCP packet's own headers, for drops per flow (bpf/drops.bpf.c):
    # skb->head + skb->network_header is its IP header.
    "NETPROF_SKB_HEAD_OFFSET": (("sk_buff", "head"),),
    "NETPROF_SKB_NETWORK_HEADER_OFFSET": (("sk_buff", "network_header"),),
    # ...and its ethertype (network order), which the raw kfree_skb hands over only as the skb.
    "NETPROF_SKB_PROTOCOL_OFFSET": (("sk_buff", "protocol"),),
    # A listener's queues and drop count, for the SYN-path kprobe (bpf/listen_syn_path.bpf.c):
    # accept-queue length and limit, SYN-queue length (request_sock_queue.qlen), sk_drops
    # (what tcp_listendrop bumps), and the pod netns' net.ipv4.tcp_syncookies.
    "NETPROF_SOCK_DROPS_OFFSET": (("sock", "sk_drops"),),
    "NETPROF_SOCK_ACK_BACKLOG_OFFSET": (("sock", "sk_ack_backlog"),),
    "NETPROF_SOCK_MAX_ACK_BACKLOG_OFFSET": (("sock", "sk_max_ack_backlog"),),
    "NETPROF_ICSK_SYN_QUEUE_LEN_OFFSET": (("inet_connection_sock", "icsk_accept_queue"),
                                          ("request_sock_queue", "qlen")),
    "NETPROF_NET_TCP_SYNCOOKIES_OFFSET": (("net", "ipv4"), ("netns_ipv4", "sysctl_tcp_syncookies")),
}

# The same values, expressed for compilation against real kernel headers (no BTF).
OFFSET_MACROS_FROM_HEADERS: dict[str, str] = {
    "NETPROF_SOCK_NET_OFFSET": "__builtin_offsetof(struct sock, __sk_common.skc_net)",
    "NETPROF_NET_INUM_OFFSET": "(__builtin_offsetof(struct net, ns) + __builtin_offsetof(struct ns_common, inum))",
    "NETPROF_SKB_TCP_GSO_SEGS_OFFSET": "(__builtin_offsetof(struct sk_buff, cb) + __builtin_offsetof(struct tcp_skb_cb, tcp_gso_segs))",
    "NETPROF_SKB_DEV_OFFSET": "__builtin_offsetof(struct sk_buff, dev)",
    "NETPROF_SKB_SK_OFFSET": "__builtin_offsetof(struct sk_buff, sk)",
    "NETPROF_NETDEV_NET_OFFSET": "__builtin_offsetof(struct net_device, nd_net)",
    "NETPROF_SOCK_NUM_OFFSET": "__builtin_offsetof(struct sock, __sk_common.skc_num)",
    "NETPROF_SOCK_FAMILY_OFFSET": "__builtin_offsetof(struct sock, __sk_common.skc_family)",
    "NETPROF_NAPI_DEV_OFFSET": "__builtin_offsetof(struct napi_struct, dev)",
    "NETPROF_NETDEV_NAME_OFFSET": "__builtin_offsetof(struct net_device, name)",
    "NETPROF_SKB_HEAD_OFFSET": "__builtin_offsetof(struct sk_buff, head)",
    "NETPROF_SKB_NETWORK_HEADER_OFFSET": "__builtin_offsetof(struct sk_buff, network_header)",
    "NETPROF_SKB_PROTOCOL_OFFSET": "__builtin_offsetof(struct sk_buff, protocol)",
    "NETPROF_SOCK_DROPS_OFFSET": "__builtin_offsetof(struct sock, sk_drops)",
    "NETPROF_SOCK_ACK_BACKLOG_OFFSET": "__builtin_offsetof(struct sock, sk_ack_backlog)",
    "NETPROF_SOCK_MAX_ACK_BACKLOG_OFFSET": "__builtin_offsetof(struct sock, sk_max_ack_backlog)",
    "NETPROF_ICSK_SYN_QUEUE_LEN_OFFSET": "(__builtin_offsetof(struct inet_connection_sock, icsk_accept_queue) + __builtin_offsetof(struct request_sock_queue, qlen))",
    "NETPROF_NET_TCP_SYNCOOKIES_OFFSET": "(__builtin_offsetof(struct net, ipv4) + __builtin_offsetof(struct netns_ipv4, sysctl_tcp_syncookies))",
}


# Raw tracepoints whose programs netprof loads typed where it can (kernel/typed_tracepoint.py).
TYPED_TRACEPOINTS = ("kfree_skb", "sock_rcvqueue_full")
# Kernel functions netprof puts fentry programs on where the kernel lets it (kernel/fentry.py).
FENTRY_FUNCTIONS = ("__sys_listen",)


@dataclass(frozen=True)
class KernelLayout:
    offsets: dict[str, int]
    drop_reasons: dict[int, str]      # value → name without the SKB_DROP_REASON_ prefix
    softirq_vectors: dict[int, str]   # value → name without the _SOFTIRQ suffix
    # The raw tracepoint kfree_skb's arguments as C types (Btf.raw_tracepoint_params); None
    # where only tracefs describes the kernel.
    kfree_skb_args: tuple[str, ...] | None = None
    # Tracepoint → BTF id of its btf_trace_ typedef, for the tracepoints netprof can run
    # typed (tp_btf) programs on (TYPED_TRACEPOINTS); empty where only tracefs describes the
    # kernel, where such programs cannot load.
    typed_tracepoint_ids: Mapping[str, int] = field(default_factory=dict)
    # Kernel function → BTF id of its FUNC, for FENTRY_FUNCTIONS; empty without BTF.
    fentry_function_ids: Mapping[str, int] = field(default_factory=dict)

    def cflags(self) -> list[str]:
        return [f"-D{name}={value}" for name, value in sorted(self.offsets.items())]


def read_layout(btf: Btf) -> KernelLayout:
    offsets = {
        macro: sum(btf.field_offset(struct, path) for struct, path in parts)
        for macro, parts in OFFSET_MACROS.items()
    }
    reasons = drop_reasons_of(btf)
    vectors = {
        value: name.removesuffix("_SOFTIRQ")
        for name, value in btf.enum_containing("NET_RX_SOFTIRQ").items()
        if name != "NR_SOFTIRQS"
    }
    return KernelLayout(offsets=offsets, drop_reasons=reasons, softirq_vectors=vectors,
                        kfree_skb_args=btf.raw_tracepoint_params("kfree_skb"),
                        typed_tracepoint_ids={tracepoint: type_id for tracepoint in TYPED_TRACEPOINTS
                                              if (type_id := btf.raw_tracepoint_type_id(tracepoint)) is not None},
                        fentry_function_ids={function: type_id for function in FENTRY_FUNCTIONS
                                             if (type_id := btf.function_type_id(function)) is not None})


def drop_reasons_of(btf: Btf) -> dict[int, str]:
    """Value → name of enum skb_drop_reason; empty on kernels before 5.17, which have no
    such enum (skb:kfree_skb has no `reason` there, and the drops probe says so itself:
    one missing enum must not stop every other probe)."""
    from .btf import BtfError

    try:
        enum = btf.enum("skb_drop_reason")
    except BtfError:
        return {}
    return {value: name.removeprefix("SKB_DROP_REASON_") for name, value in enum.items()}


def read_layout_from_tracefs(tracefs: str) -> KernelLayout:
    """Enums from tracepoint formats, for kernels without BTF (compiled against real headers,
    where offsets come from the headers themselves)."""
    from pathlib import Path

    from ..errors import NetprofError
    from .kernel_files import read_kernel_text

    def symbols(event: str, field: str) -> dict[int, str]:
        path = Path(tracefs) / "events" / event / "format"
        try:
            text = read_kernel_text(path)
        except OSError as exc:
            raise NetprofError(f"cannot read the tracepoint format {path}: {exc.strerror}") from None
        return parse_print_symbolic(text, field)

    return KernelLayout(
        offsets={},
        drop_reasons=symbols("skb/kfree_skb", "reason"),
        softirq_vectors=symbols("irq/softirq_entry", "vec"),
    )


def parse_print_symbolic(format_text: str, field: str) -> dict[int, str]:
    """Value → name from a tracepoint's `__print_symbolic(REC->field, { 2, "NAME" }, …)`."""
    import re

    marker = f"__print_symbolic(REC->{field},"
    start = format_text.find(marker)
    if start < 0:
        return {}
    pairs = re.findall(r'\{\s*(\d+)\s*,\s*"([A-Za-z0-9_]+)"\s*\}', format_text[start:])
    return {int(value): name for value, name in pairs}
