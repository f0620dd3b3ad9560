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
 * plus one stack walk and one update of retransmits_by_stack, keyed by (netns, stack id,
 * generation), for flame graphs, sampled per pod on a CPU-time budget, see bpf/stacks.h;
 * what finds no room in the bounded maps is counted in retransmit_stacks_lost).
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
BPF_STACK_TRACE(retransmit_stack_traces_0, NETPROF_RETRANSMIT_MAX_STACKS);
BPF_STACK_TRACE(retransmit_stack_traces_1, NETPROF_RETRANSMIT_MAX_STACKS);
BPF_ARRAY(retransmit_stack_generation, u32, 1);
BPF_HASH(retransmits_by_stack, struct retransmit_stack_key, struct stack_count, NETPROF_RETRANSMIT_MAX_STACK_KEYS);
BPF_PERCPU_ARRAY(retransmit_stacks_lost, u64, STACK_LOST_SLOTS);
BPF_PERCPU_ARRAY(retransmit_stack_sampler, struct stack_sampler, 1);
/* The sampling key of a retransmit is its pod; LRU: a pod evicted just starts afresh (its
 * pending retransmits, at most one spacing's worth per CPU, go unattributed). */
BPF_TABLE("lru_percpu_hash", u32, struct stack_key_state, retransmit_stack_keys, NETPROF_STACK_KEY_PODS);
/* [0] != 0: stack walks paused, the quiet detail tier (profiler/detail_tier.py); checked
 * first, so a paused retransmit takes no clock read and no sampling state. */
BPF_ARRAY(retransmit_stacks_paused, u32, 1);

static __always_inline void count_stack_lost(int slot, u64 events)
{
    u64 *count = retransmit_stacks_lost.lookup(&slot);
    if (count)
        *count += events;
}

static __always_inline void count_by_stack(int stack_id, u32 generation, u32 netns, u64 weight)
{
    if (stack_id < 0) {
        count_stack_lost(STACK_LOST_NO_STACK_ID, weight);
        return;
    }
    struct retransmit_stack_key key = {.netns_inode = netns, .stack_id = (u32)stack_id, .generation = generation};
    struct stack_count first = {.events = weight, .samples = 1};
    struct stack_count *count = retransmits_by_stack.lookup(&key);
    if (!count) {
        if (retransmits_by_stack.insert(&key, &first) == 0)
            return;
        count = retransmits_by_stack.lookup(&key);
    }
    if (count) {
        __sync_fetch_and_add(&count->events, weight);
        __sync_fetch_and_add(&count->samples, 1);
    } else {
        count_stack_lost(STACK_LOST_COUNTER_MAP_FULL, weight);
    }
}

static __always_inline void sample_retransmit_stack(void *ctx, u32 netns)
{
    int zero = 0;
    struct stack_sampler *sampler = retransmit_stack_sampler.lookup(&zero);
    if (!sampler)
        return;
    struct stack_key_state *state = retransmit_stack_keys.lookup(&netns);
    if (!state) {
        struct stack_key_state fresh = {};
        retransmit_stack_keys.update(&netns, &fresh);  /* LRU: never fails for room */
        state = retransmit_stack_keys.lookup(&netns);
        if (!state)
            return;
    }
    /* Retransmits run on kernels older than the coarse clock (5.11): the precise one. */
    u64 now_ns = bpf_ktime_get_ns();
    if (!stack_walk_allowed(sampler, state, now_ns)) {
        state->pending += 1;
        return;
    }
    u32 *active = retransmit_stack_generation.lookup(&zero);
    u32 epoch = active ? *active : 0;
    u32 generation = epoch & 1;
    /* Flags 0: a bucket held by another stack refuses this one (-EEXIST, counted as lost)
     * instead of replacing it, so stack ids already counted keep their meaning. */
    int stack_id = generation ? retransmit_stack_traces_1.get_stackid(ctx, 0)
                              : retransmit_stack_traces_0.get_stackid(ctx, 0);
    u64 weight = stack_walk_done(sampler, state, now_ns, bpf_ktime_get_ns() - now_ns, stack_id, epoch);
    count_by_stack(stack_id, generation, netns, weight);
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
    int flag_slot = 0;
    u32 *paused = retransmit_stacks_paused.lookup(&flag_slot);
    if (!paused || !*paused)
        sample_retransmit_stack(args, netns);
#endif

#ifdef NETPROF_RETRANSMIT_HAS_FAMILY
    u16 family = args->family;
#else
    /* The record has no family before 5.11 (Debian 11's 5.10): the socket's own. Either
     * way saddr/daddr hold the IPv4 addresses and saddr_v6/daddr_v6 the IPv6 ones. */
    u16 family = 0;
    bpf_probe_read_kernel(&family, sizeof(family), (const char *)args->skaddr + NETPROF_SOCK_FAMILY_OFFSET);
#endif
    struct retransmit_flow_key key = {};
    key.netns_inode = netns;
    key.family = family;
    key.sport = args->sport;
    key.dport = args->dport;
    key.state = args->state;
    if (family == NETPROF_AF_INET6) {
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
