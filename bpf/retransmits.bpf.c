/* TCP retransmits per network namespace and per flow.
 *
 * Hook: tracepoint tcp:tcp_retransmit_skb — stable ABI, fires once per retransmitted skb
 * (a GSO skb may carry several segments, so this counts fewer than RetransSegs on bulk
 * flows; design.md §8). No kprobe is needed, so this runs on kernels without CONFIG_KPROBES.
 *
 * Everything is counted in the kernel; Python reads the maps once per interval, so the cost
 * per retransmit is two map updates whatever the event rate.
 */
#include "netns.h"
#include "retransmits.h"

#define NETPROF_AF_INET 2
#define NETPROF_AF_INET6 10

/* Cumulative retransmits per netns inode. Small: one entry per pod. */
BPF_HASH(retransmits_by_netns, u32, u64, NETPROF_MAX_NETNS);
/* Cumulative retransmits per flow. LRU so a node with many short flows never fills it;
 * an evicted flow's history is lost from the detail, never from the per-netns total. */
BPF_TABLE("lru_hash", struct retransmit_flow_key, u64, retransmits_by_flow, NETPROF_MAX_FLOWS);
/* [0]: retransmits not counted per netns because that map was full. */
BPF_ARRAY(retransmit_map_full, u64, 1);

TRACEPOINT_PROBE(tcp, tcp_retransmit_skb)
{
    u32 netns = netns_inode_of_sock(args->skaddr);
    u64 one = 1;

    u64 *total = retransmits_by_netns.lookup(&netns);
    if (total) {
        __sync_fetch_and_add(total, 1);
    } else if (retransmits_by_netns.insert(&netns, &one) != 0) {
        /* -EEXIST: another CPU inserted it first; anything else: the map is full. */
        total = retransmits_by_netns.lookup(&netns);
        if (total) {
            __sync_fetch_and_add(total, 1);
        } else {
            int zero = 0;
            u64 *full = retransmit_map_full.lookup(&zero);
            if (full)
                __sync_fetch_and_add(full, 1);
        }
    }

    struct retransmit_flow_key key = {};
    key.netns_inode = netns;
    key.family = args->family;
    key.sport = args->sport;
    key.dport = args->dport;
    key.state = args->state;
    if (args->family == NETPROF_AF_INET6) {
        __builtin_memcpy(key.saddr, args->saddr_v6, 16);
        __builtin_memcpy(key.daddr, args->daddr_v6, 16);
    } else {
        __builtin_memcpy(key.saddr, args->saddr, 4);
        __builtin_memcpy(key.daddr, args->daddr, 4);
    }
    u64 *flow = retransmits_by_flow.lookup(&key);
    if (flow)
        __sync_fetch_and_add(flow, 1);
    else
        retransmits_by_flow.update(&key, &one);
    return 0;
}
