"""Drop reasons from the call site, for kernels whose skb:kfree_skb has no `reason` (before
Linux 5.17: Debian 11's 5.10, Ubuntu 20.04's 5.4 and 22.04's 5.15, RHEL 8 and 9).

There every kfree_skb() reaches the tracepoint, ordinary frees and drops alike, with only
the address it was called from. A few kernel functions free a packet for one reason only:
that is the reason of a drop there, as dropwatch's users have long read it. A free anywhere
else is NOT_SPECIFIED, which is what a generic kfree_skb() is on later kernels too, and is
tallied, not counted as a drop. So a pod's CPU_BACKLOG, SOCKET_RCVBUFF and NETFILTER_DROP
mean the same on 5.10 as on 6.x, and findings and fixes need no second path.

Each function below was seen dropping with its reason in a lab scenario on Debian's 5.10
(tests/integration/test_drops.py runs them there, tests/kernels). Where a function also has
other, rarer drops, they count under its reason; later kernels name them apart:
- udp_queue_rcv_one_skb (__udp_queue_rcv_skb inlined into it): a full receive buffer,
  and also a checksum error, a socket filter or an encapsulation policy refusing the packet.
- ping_queue_rcv_skb: sock_queue_rcv_skb refused the packet; a socket filter can too.

Values are this module's own: the kernel has no enum to take them from. Names are the
kernel's later SKB_DROP_REASON_* names, so every view reads them the same way.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

from ..kernel.kallsyms import Kallsyms

# Value → name, as a kernel's enum skb_drop_reason would give (reason_cflags reads it).
SITE_REASONS: dict[int, str] = {
    0: "NOT_SPECIFIED",
    1: "CPU_BACKLOG",
    2: "SOCKET_RCVBUFF",
    3: "NETFILTER_DROP",
}

# Function → reason of every drop it makes. Names from 5.10 and from later kernels (where a
# test forces this path, tests/integration/test_drop_sites.py), IPv6 beside IPv4.
SITE_FUNCTIONS: tuple[tuple[str, str], ...] = (
    ("enqueue_to_backlog", "CPU_BACKLOG"),
    ("udp_queue_rcv_one_skb", "SOCKET_RCVBUFF"),
    ("__udp_queue_rcv_skb", "SOCKET_RCVBUFF"),
    ("udpv6_queue_rcv_one_skb", "SOCKET_RCVBUFF"),
    ("__udpv6_queue_rcv_skb", "SOCKET_RCVBUFF"),
    ("ping_queue_rcv_skb", "SOCKET_RCVBUFF"),
    ("nf_hook_slow", "NETFILTER_DROP"),
    ("nft_do_chain", "NETFILTER_DROP"),
)

# bpf/drops.h DROP_SITE_ROWS: rows the program reads (a static function can be listed
# more than once in kallsyms, so the functions above may need more rows than names).
SITE_ROWS = 16


@dataclass(frozen=True)
class SiteRange:
    start: int
    end: int
    reason: int
    function: str


def site_ranges(kallsyms: Kallsyms, functions: Iterable[tuple[str, str]] = SITE_FUNCTIONS,
                rows: int = SITE_ROWS) -> list[SiteRange]:
    """Text ranges of the listed functions this kernel has, at most `rows` of them. A
    function the kernel lacks (renamed, inlined everywhere) is left out: its drops are
    NOT_SPECIFIED, never another function's."""
    values = {name: value for value, name in SITE_REASONS.items()}
    found: list[SiteRange] = []
    for function, reason in functions:
        for start, end in kallsyms.function_ranges(function):
            found.append(SiteRange(start, end, values[reason], function))
    return found[:rows]


def write_site_ranges(table, ranges: list[SiteRange]) -> None:
    """Fill the program's drop_site_reasons array, then end it with an empty row."""
    for index, site in enumerate(ranges):
        row = table.Leaf()
        row.start, row.end, row.reason = site.start, site.end, site.reason
        table[table.Key(index)] = row
    if len(ranges) < SITE_ROWS:
        table[table.Key(len(ranges))] = table.Leaf()
