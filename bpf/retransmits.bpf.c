/* TCP retransmits per network namespace and per flow.
 *
 * Hook: tracepoint tcp:tcp_retransmit_skb — stable ABI, fires once per retransmitted skb.
 * After a loss, writes queued behind the lost one coalesce into multi-segment skbs, so the
 * skb count runs at about half of RetransSegs (measured: 119 vs 207). Each event therefore
 * also adds the skb's segment count (tcp_skb_pcount, read from skb->cb at a BTF offset),
 * which is the number operators know from `nstat TcpRetransSegs`.
 * No kprobe is needed, so this runs on kernels without CONFIG_KPROBES.
 *
 * Everything is counted in the kernel; Python reads the maps once per interval, so the cost
 * per retransmit is two map updates whatever the event rate (with -DNETPROF_RETRANSMIT_STACKS,
 * plus one stack walk and one update of retransmits_by_stack, keyed by (netns, stack id), for
 * flame graphs, within per-CPU and per-pod stack budgets, see bpf/stacks.h; what is past a
 * budget or the bounded maps is counted in retransmit_stacks_lost).
 */
#include "netns.h"
#include "retransmits.h"
#include "stacks.h"

#define NETPROF_AF_INET 2
#define NETPROF_AF_INET6 10

/* Cumulative counts per netns inode. Small: one entry per pod. */
BPF_HASH(retransmits_by_netns, u32, struct retransmit_counts, NETPROF_MAX_NETNS);
/* Cumulative retransmits per flow. LRU so a node with many short flows never fills it;
 * an evicted flow's history is lost from the detail, never from the per-netns total. */
BPF_TABLE("lru_hash", struct retransmit_flow_key, struct retransmit_counts, retransmits_by_flow,
          NETPROF_MAX_FLOWS);
/* [0]: retransmits not counted per netns because that map was full. */
BPF_ARRAY(retransmit_map_full, u64, 1);

#ifdef NETPROF_RETRANSMIT_STACKS
BPF_STACK_TRACE(retransmit_stack_traces, NETPROF_RETRANSMIT_MAX_STACKS);
BPF_HASH(retransmits_by_stack, struct retransmit_stack_key, u64, NETPROF_RETRANSMIT_MAX_STACK_KEYS);
BPF_PERCPU_ARRAY(retransmit_stacks_lost, u64, STACK_LOST_SLOTS);
BPF_PERCPU_ARRAY(retransmit_stack_budget, struct stack_budget, 1);
BPF_TABLE("lru_percpu_hash", u32, struct stack_budget, retransmit_stack_budget_by_netns, NETPROF_STACK_BUDGET_PODS);

static __always_inline bool retransmit_stack_allowed(u32 netns)
{
    int zero = 0;
    u64 now_ns = bpf_ktime_get_ns();
    struct stack_budget *cpu = retransmit_stack_budget.lookup(&zero);
    /* As in drops.bpf.c: an exhausted CPU budget skips the pod budget's LRU lookup too. */
    if (!cpu || !stack_budget_open(cpu, now_ns, NETPROF_STACKS_PER_S))
        return false;
    struct stack_budget *pod = retransmit_stack_budget_by_netns.lookup(&netns);
    if (!pod) {
        struct stack_budget fresh = {};
        retransmit_stack_budget_by_netns.update(&netns, &fresh);
        pod = retransmit_stack_budget_by_netns.lookup(&netns);
    }
    if (!pod || !stack_budget_open(pod, now_ns, NETPROF_STACKS_PER_S_PER_POD))
        return false;
    cpu->taken += 1;
    pod->taken += 1;
    return true;
}

static __always_inline void count_stack_lost(int slot)
{
    u64 *count = retransmit_stacks_lost.lookup(&slot);
    if (count)
        *count += 1;
}

static __always_inline void count_by_stack(int stack_id, u32 netns)
{
    if (stack_id < 0) {
        count_stack_lost(STACK_LOST_NO_STACK_ID);
        return;
    }
    struct retransmit_stack_key key = {.netns_inode = netns, .stack_id = (u32)stack_id};
    u64 one = 1;
    u64 *count = retransmits_by_stack.lookup(&key);
    if (count) {
        __sync_fetch_and_add(count, 1);
        return;
    }
    if (retransmits_by_stack.insert(&key, &one) == 0)
        return;
    count = retransmits_by_stack.lookup(&key);
    if (count)
        __sync_fetch_and_add(count, 1);
    else
        count_stack_lost(STACK_LOST_COUNTER_MAP_FULL);
}
#endif

static __always_inline void add_counts(struct retransmit_counts *counts, u64 segments)
{
    __sync_fetch_and_add(&counts->retransmits, 1);
    __sync_fetch_and_add(&counts->segments, segments);
}

TRACEPOINT_PROBE(tcp, tcp_retransmit_skb)
{
#ifdef NETPROF_RETRANSMIT_HAS_ERR
    /* Since 6.10 the tracepoint also fires for attempts that failed (err != 0: the skb
     * could not be sent, e.g. the qdisc was full). Those put nothing on the wire and are
     * not in RetransSegs; counting them over-counted a retransmit storm by ~9%. */
    if (args->err)
        return 0;
#endif
    u32 netns = netns_inode_of_sock(args->skaddr);
    u16 gso_segs = 0;
    bpf_probe_read_kernel(&gso_segs, sizeof(gso_segs),
                          (const char *)args->skbaddr + NETPROF_SKB_TCP_GSO_SEGS_OFFSET);
    u64 segments = gso_segs ? gso_segs : 1;
    struct retransmit_counts first = {.retransmits = 1, .segments = segments};

    struct retransmit_counts *total = retransmits_by_netns.lookup(&netns);
    if (total) {
        add_counts(total, segments);
    } else if (retransmits_by_netns.insert(&netns, &first) != 0) {
        /* -EEXIST: another CPU inserted it first; anything else: the map is full. */
        total = retransmits_by_netns.lookup(&netns);
        if (total) {
            add_counts(total, segments);
        } else {
            int zero = 0;
            u64 *full = retransmit_map_full.lookup(&zero);
            if (full)
                __sync_fetch_and_add(full, 1);
        }
    }

#ifdef NETPROF_RETRANSMIT_STACKS
    if (retransmit_stack_allowed(netns))
        /* Flags 0: a bucket held by another stack refuses this one (-EEXIST, counted as
         * lost) instead of replacing it, so stack ids already counted keep their meaning. */
        count_by_stack(retransmit_stack_traces.get_stackid(args, 0), netns);
    else
        count_stack_lost(STACK_LOST_RATE_LIMITED);
#endif

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
    struct retransmit_counts *flow = retransmits_by_flow.lookup(&key);
    if (flow)
        add_counts(flow, segments);
    else
        retransmits_by_flow.update(&key, &first);
    return 0;
}
