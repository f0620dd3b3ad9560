/* skb drops by kernel drop reason, counted per (network namespace, reason, call site) on each
 * CPU; plus socket receive-queue-full events per namespace.
 *
 * Hook: the raw tracepoint kfree_skb (TP_PROTO(skb, location, reason since 5.17, rx_sk since
 * 6.11); which of the last two exist, the probe reads from BTF's btf_trace_kfree_skb, else the
 * tracepoint's format). Typed (tp_btf, -DNETPROF_TYPED_LOADS) where BTF has that prototype:
 * the verifier then knows skb and rx_sk for what they are, and following them is a plain load
 * instead of a bpf_probe_read_kernel call (bpf/netns.h, NETPROF_KERNEL_LOAD). It
 * fires for every kfree_skb_reason(), including the generic kfree_skb() calls that free
 * packets for ordinary reasons with reason NOT_SPECIFIED: those are not counted as drops,
 * only tallied in one per-CPU slot so the capture can say how many were ignored. Reason
 * values are never written here: the probe reads them from this kernel's BTF and passes
 * them in as -D macros. Raw, not skb:kfree_skb as a perf-event tracepoint: that fills an
 * event record on every free before any program runs, which in a drop storm is most of
 * what being on this hook costs (bench/README.md, "floor-raw"); the arguments come as
 * they are, and skb->protocol is read here only for a drop that may be TCP.
 *
 * The namespace of a drop is the receiving socket's (rx_sk, set by sk_skb_reason_drop) when
 * there is one; else the namespace of the skb's device (skb->dev->nd_net: where the packet
 * is, e.g. CPU_BACKLOG on the receiving veth); else the owning socket's (skb->sk: a packet
 * purged from a receive queue at close, or dropped on its way out before it has a device);
 * else 0. The CPU
 * is the one that called kfree_skb: for CPU_BACKLOG that is the CPU enqueuing the packet,
 * not the CPU whose backlog was full (softnet_stat's `dropped` charges that one).
 *
 * Before 5.17 (-DNETPROF_DROP_REASONS_FROM_SITES) the tracepoint has no reason: every
 * kfree_skb() reaches it, drops and ordinary frees alike, and a drop's reason is its call
 * site's (struct drop_site_reason in drops.h); a free at any other site is NOT_SPECIFIED,
 * as a generic kfree_skb() is on later kernels, and is tallied, not counted.
 *
 * Hook: raw tracepoint sock_rcvqueue_full (only with -DNETPROF_DROPS_RCVQUEUE_FULL). Its
 * tracefs record holds rmem_alloc, truesize and sk_rcvbuf but no socket, so the raw
 * tracepoint's first argument (struct sock *) gives the namespace. It fires in
 * __sock_queue_rcv_skb (raw, ICMP ping, and other sockets using sock_queue_rcv_skb), not
 * for UDP or TCP, which check their receive buffers in their own code.
 *
 * Kernel stacks (only with -DNETPROF_DROPS_STACKS): sampled on a CPU-time budget, at most
 * once per (site, reason, pod) per 10 ms per CPU, each walk weighted by the drops it stands
 * for (bpf/stacks.h), into drop_stack_traces_<generation> and counted per (netns, reason,
 * stack id, generation) in drops_by_stack. The sampling state of a (site, netns, reason)
 * lives in the same per-CPU value as its count: no extra lookup per drop. Drops whose walk
 * finds no room are counted in drop_stacks_lost, never silently missing.
 *
 * TCP flows (only with -DNETPROF_DROPS_FLOWS): a dropped packet that is IPv4 or IPv6 TCP
 * (the tracepoint's protocol, then the IP header's protocol / next header; no IPv6
 * extension headers)
 * is counted per (site, netns, reason, 4-tuple) in an LRU map, from its own headers at
 * skb->head + skb->network_header. Only TCP: what a retransmit can be matched against.
 * LRU: a flood of distinct flows evicts old ones from this detail, never a drop from the
 * counts above.
 *
 * Cost per drop: one per-CPU hash update and a clock read (plus, within the stack
 * budget, one stack walk), no ring buffer, no user-space work.
 */
#include "netns.h"
#include "drops.h"
#include "stacks.h"

#if !defined(NETPROF_SKB_DEV_OFFSET) || !defined(NETPROF_SKB_SK_OFFSET) || \
    !defined(NETPROF_NETDEV_NET_OFFSET) || !defined(NETPROF_SOCK_NUM_OFFSET)
#error "skb/net_device/sock offsets must come from BTF (see profiler/kernel/offsets.py)"
#endif
#if !defined(NETPROF_DROP_REASON_NOT_SPECIFIED) || !defined(NETPROF_DROP_REASON_TCP_LISTEN_OVERFLOW) || \
    !defined(NETPROF_DROP_REASON_SOCKET_RCVBUFF) || !defined(NETPROF_DROP_REASON_UDP_CSUM)
#error "drop reason values must come from BTF (see profiler/probes/drops.py)"
#endif

/* The one map every drop touches: per-CPU values, so the dropping CPU only ever adds to its
 * own counter (no atomics, no cache line shared with other CPUs), and one hash operation
 * per drop where per-netns, per-CPU and per-site maps took three. Allocated as keys appear
 * rather than preallocated: a preallocated per-CPU map costs max_entries × 8 B on every
 * CPU whether or not anything drops. Full → counted in UNCOUNTED_DROPS_MAP_FULL.
 * Before 6.1 (-DNETPROF_DROPS_PREALLOC) allocating in a tracing program is unsafe (the
 * tracepoint can fire inside the allocator; 5.10 warns "trace type BPF program uses
 * run-time allocation"): there the map is preallocated, with fewer keys. */
#ifdef NETPROF_DROPS_PREALLOC
#define NETPROF_DROPS_MAP_FLAGS 0
#else
#define NETPROF_DROPS_MAP_FLAGS BPF_F_NO_PREALLOC
#endif
BPF_F_TABLE("percpu_hash", struct drop_key, struct drop_count, drops_by_netns_reason_site, NETPROF_DROPS_MAX_KEYS,
            NETPROF_DROPS_MAP_FLAGS);
BPF_HASH(listen_overflows_by_port, struct listen_overflow_key, u64, NETPROF_DROPS_MAX_LISTENERS);
BPF_HASH(rcvqueue_full_by_netns, u32, u64, NETPROF_MAX_NETNS);
BPF_PERCPU_ARRAY(drops_uncounted, u64, UNCOUNTED_SLOTS);

#ifdef NETPROF_DROP_REASONS_FROM_SITES
BPF_ARRAY(drop_site_reasons, struct drop_site_reason, DROP_SITE_ROWS);

/* The reason of the function `location` lies in; NOT_SPECIFIED outside all of them. A
 * handful of rows, each a constant-index array load the verifier inlines. */
static __always_inline u32 reason_of_site(u64 location)
{
#pragma unroll
    for (int row = 0; row < DROP_SITE_ROWS; row++) {
        int index = row;
        struct drop_site_reason *site = drop_site_reasons.lookup(&index);
        if (!site || !site->end)
            break;
        if (location >= site->start && location < site->end)
            return site->reason;
    }
    return (u32)NETPROF_DROP_REASON_NOT_SPECIFIED;
}
#endif

#ifdef NETPROF_DROPS_FLOWS
#if !defined(NETPROF_SKB_HEAD_OFFSET) || !defined(NETPROF_SKB_NETWORK_HEADER_OFFSET) || !defined(NETPROF_SKB_PROTOCOL_OFFSET)
#error "skb header offsets must come from BTF (see profiler/kernel/offsets.py)"
#endif
BPF_TABLE("lru_hash", struct drop_flow_key, u64, drops_by_flow, NETPROF_DROPS_MAX_FLOWS);

#define NETPROF_AF_INET 2
#define NETPROF_AF_INET6 10
#define NETPROF_IPPROTO_TCP 6

static __always_inline u16 be16_to_host(u16 value)
{
    return __builtin_bswap16(value);  /* x86-64 and arm64 kernels run little-endian */
}

/* skb->network_header and skb->head in one read when they lie close together (6.x: 12 bytes
 * apart), two otherwise: each bpf_probe_read_kernel costs more than the bytes it copies.
 * A C condition on constants, not #if: on the kernel-headers path the offsets are
 * __builtin_offsetof() expressions, which the preprocessor cannot evaluate (6.1 with BTF
 * hidden failed to compile here); clang folds the condition and drops the other branch. */
#define NETPROF_SKB_GAP ((long)(NETPROF_SKB_HEAD_OFFSET) - (long)(NETPROF_SKB_NETWORK_HEADER_OFFSET))
#define NETPROF_SKB_NEAR (NETPROF_SKB_GAP > 0 && NETPROF_SKB_GAP <= 24)
#define NETPROF_SKB_SPAN (NETPROF_SKB_NEAR ? NETPROF_SKB_GAP + 8 : 8)
static __always_inline bool network_header_of(const void *skb, const unsigned char **ip)
{
    u16 network = 0;
    const unsigned char *head = 0;

#ifdef NETPROF_TYPED_LOADS
    network = NETPROF_KERNEL_LOAD(u16, skb, NETPROF_SKB_NETWORK_HEADER_OFFSET);
    head = NETPROF_KERNEL_LOAD(const unsigned char *, skb, NETPROF_SKB_HEAD_OFFSET);
#else
    if (NETPROF_SKB_NEAR) {
        u8 span[32] = {};

        if (bpf_probe_read_kernel(span, NETPROF_SKB_SPAN, (const char *)skb + NETPROF_SKB_NETWORK_HEADER_OFFSET))
            return false;
        __builtin_memcpy(&network, span, sizeof(network));
        __builtin_memcpy(&head, span + NETPROF_SKB_SPAN - 8, sizeof(head));
    } else if (bpf_probe_read_kernel(&network, sizeof(network), (const char *)skb + NETPROF_SKB_NETWORK_HEADER_OFFSET) ||
               bpf_probe_read_kernel(&head, sizeof(head), (const char *)skb + NETPROF_SKB_HEAD_OFFSET)) {
        return false;
    }
#endif
    if (!head || network == 0xffff)  /* ~0: no network header was set on this skb */
        return false;
    *ip = head + network;
    return true;
}

/* The dropped packet's TCP 4-tuple into `key`; false when it is not IPv4/IPv6 TCP or its
 * headers cannot be read. Cheapest rejections first, since most drops in a storm are not
 * TCP and every kernel read costs ≈35–40 ns here: reasons only UDP and raw sockets use
 * (SOCKET_RCVBUFF, UDP_CSUM: a UDP receive-buffer storm) turn drops away for free, then
 * skb->protocol (the ethertype) for one read; other UDP drops cost three reads (protocol,
 * skb fields, IP header). Only TCP reads its ports. */
static __always_inline bool tcp_flow_of_skb(const void *skb, u32 reason, struct drop_flow_key *key)
{
    const unsigned char *ip;
    u16 ports[2] = {};
    u16 protocol;

    if (reason == (u32)NETPROF_DROP_REASON_SOCKET_RCVBUFF || reason == (u32)NETPROF_DROP_REASON_UDP_CSUM)
        return false;
    protocol = be16_to_host(NETPROF_KERNEL_LOAD(u16, skb, NETPROF_SKB_PROTOCOL_OFFSET));
    if (protocol != 0x0800 && protocol != 0x86DD)    /* ETH_P_IP, ETH_P_IPV6 */
        return false;
    if (!network_header_of(skb, &ip))
        return false;
    if (protocol == 0x0800) {
        u8 header[20] = {};
        if (bpf_probe_read_kernel(header, sizeof(header), ip) || (header[0] >> 4) != 4 ||
            header[9] != NETPROF_IPPROTO_TCP)
            return false;
        key->family = NETPROF_AF_INET;
        __builtin_memcpy(key->saddr, &header[12], 4);
        __builtin_memcpy(key->daddr, &header[16], 4);
        if (bpf_probe_read_kernel(ports, sizeof(ports), ip + (header[0] & 0x0f) * 4))
            return false;
    } else {
        u8 header[40] = {};
        if (bpf_probe_read_kernel(header, sizeof(header), ip) || (header[0] >> 4) != 6 ||
            header[6] != NETPROF_IPPROTO_TCP)
            return false;
        key->family = NETPROF_AF_INET6;
        __builtin_memcpy(key->saddr, &header[8], 16);
        __builtin_memcpy(key->daddr, &header[24], 16);
        if (bpf_probe_read_kernel(ports, sizeof(ports), ip + 40))
            return false;
    }
    key->sport = be16_to_host(ports[0]);
    key->dport = be16_to_host(ports[1]);
    return true;
}

static __always_inline void count_tcp_flow_drop(const void *skb, const struct drop_key *drop)
{
    struct drop_flow_key key = {};
    u64 one = 1;

    if (!tcp_flow_of_skb(skb, drop->reason, &key))
        return;
    key.location = drop->location;
    key.netns_inode = drop->netns_inode;
    key.reason = drop->reason;
    u64 *count = drops_by_flow.lookup(&key);
    if (count)
        __sync_fetch_and_add(count, 1);
    else
        drops_by_flow.update(&key, &one);  /* LRU: never fails for room */
}
#endif

#ifdef NETPROF_DROPS_STACKS
/* Two generations of stack maps (bpf/stacks.h): user space advances drop_stack_generation
 * (an epoch; the active map is epoch & 1) at every fold and clears the map it will make
 * active next. */
BPF_STACK_TRACE(drop_stack_traces_0, NETPROF_DROPS_MAX_STACKS);
BPF_STACK_TRACE(drop_stack_traces_1, NETPROF_DROPS_MAX_STACKS);
BPF_ARRAY(drop_stack_generation, u32, 1);
BPF_HASH(drops_by_stack, struct drop_stack_key, struct stack_count, NETPROF_DROPS_MAX_STACK_KEYS);
BPF_PERCPU_ARRAY(drop_stacks_lost, u64, STACK_LOST_SLOTS);
BPF_PERCPU_ARRAY(drop_stack_sampler, struct stack_sampler, 1);
/* [0] != 0: stack walks paused, the quiet detail tier (profiler/detail_tier.py). Read before
 * anything else of the stack path, so a paused drop costs one array load (the verifier
 * inlines a constant-key array lookup) and leaves the key's sampling state untouched. */
BPF_ARRAY(drop_stacks_paused, u32, 1);

static __always_inline void count_stack_lost(int slot, u64 events)
{
    u64 *count = drop_stacks_lost.lookup(&slot);
    if (count)
        *count += events;
}

static __always_inline void count_by_stack(int stack_id, u32 generation, u32 netns, u32 reason, u64 weight)
{
    if (stack_id < 0) {
        count_stack_lost(STACK_LOST_NO_STACK_ID, weight);
        return;
    }
    struct drop_stack_key key = {.netns_inode = netns, .reason = reason, .stack_id = (u32)stack_id,
                                 .generation = generation};
    struct stack_count first = {.events = weight, .samples = 1};
    struct stack_count *count = drops_by_stack.lookup(&key);
    if (!count) {
        if (drops_by_stack.insert(&key, &first) == 0)
            return;
        count = drops_by_stack.lookup(&key);  /* -EEXIST: another CPU inserted it first */
    }
    if (count) {
        __sync_fetch_and_add(&count->events, weight);
        __sync_fetch_and_add(&count->samples, 1);
    } else {
        count_stack_lost(STACK_LOST_COUNTER_MAP_FULL, weight);
    }
}

static __always_inline void sample_drop_stack(void *ctx, struct stack_key_state *state, u32 netns, u32 reason)
{
    /* A busy key is checked once per NETPROF_STACK_CHECK_EVERY events: the others only add
     * to its pending weight, without the clock read and the sampler lookup (≈40 ns of a
     * ≈200 ns drop in a storm). The first event after a walk is always checked, so a rare
     * key (events far apart) is checked at every event; a busy one walks at most that many
     * events late (≈0.1 ms at 120 k drops/s), against a 10 ms spacing. */
    if (state->pending & (NETPROF_STACK_CHECK_EVERY - 1)) {
        state->pending += 1;
        return;
    }
    int zero = 0;
    struct stack_sampler *sampler = drop_stack_sampler.lookup(&zero);
    if (!sampler)
        return;
    u64 now_ns = bpf_ktime_get_ns();
    if (!stack_walk_allowed(sampler, state, now_ns)) {
        state->pending += 1;
        return;
    }
    u32 *active = drop_stack_generation.lookup(&zero);
    u32 epoch = active ? *active : 0;
    u32 generation = epoch & 1;
    /* Flags 0: a stack whose hash bucket holds another stack is refused (-EEXIST) rather
     * than replacing it, so an id read earlier in this generation keeps its meaning. */
    int stack_id = generation ? drop_stack_traces_1.get_stackid(ctx, 0) : drop_stack_traces_0.get_stackid(ctx, 0);
    u64 weight = stack_walk_done(sampler, state, now_ns, bpf_ktime_get_ns() - now_ns, stack_id, epoch);
    count_by_stack(stack_id, generation, netns, reason, weight);
}
#endif

static __always_inline void count_uncounted(int slot)
{
    u64 *count = drops_uncounted.lookup(&slot);
    if (count)
        *count += 1;
}

static __always_inline u32 netns_inode_of_skb_dev(const void *skb)
{
    /* skb->dev shares a union with dev_scratch (UDP keeps sizes there while an skb sits in
     * a receive queue); a scratch value is not a kernel address and the loads below give 0. */
    const void *dev = NETPROF_KERNEL_LOAD(const void *, skb, NETPROF_SKB_DEV_OFFSET);
    if (!dev)
        return 0;
    /* nd_net is a possible_net_t: a struct holding one struct net pointer. */
    const void *net = NETPROF_KERNEL_LOAD(const void *, dev, NETPROF_NETDEV_NET_OFFSET);
    if (!net)
        return 0;
    return NETPROF_KERNEL_LOAD(u32, net, NETPROF_NET_INUM_OFFSET);
}

static __always_inline u32 netns_inode_of_skb_owner(const void *skb)
{
    /* skb->sk shares a union with ip_defrag_offset (IP fragments being reassembled): such
     * an offset is no kernel address, and the loads in netns_inode_of_sock give 0. */
    return netns_inode_of_sock(NETPROF_KERNEL_LOAD(const void *, skb, NETPROF_SKB_SK_OFFSET));
}

/* Counts the drop; returns this CPU's value for the key (its stack state), or 0 when the
 * map is full. */
static __always_inline struct drop_count *count_drop(struct drop_key *key)
{
    struct drop_count *count = drops_by_netns_reason_site.lookup(key);
    if (count) {
        count->count += 1;  /* this CPU's own slot: tracing programs never nest on a CPU */
        return count;
    }
    /* A new key gets this CPU's value set to 1 and every other CPU's to 0. -EEXIST means
     * a program on another CPU inserted it first; anything else, the map is full. */
    struct drop_count first = {.count = 1};
    if (drops_by_netns_reason_site.insert(key, &first) == 0)
        return drops_by_netns_reason_site.lookup(key);
    count = drops_by_netns_reason_site.lookup(key);
    if (count)
        count->count += 1;
    else
        count_uncounted(UNCOUNTED_DROPS_MAP_FULL);
    return count;
}

static __always_inline void count_listen_overflow(const void *listener, u32 netns)
{
    struct listen_overflow_key key = {};
    u64 one = 1;

    key.netns_inode = netns;
    key.port = NETPROF_KERNEL_LOAD(u16, listener, NETPROF_SOCK_NUM_OFFSET);
    u64 *count = listen_overflows_by_port.lookup(&key);
    if (count) {
        __sync_fetch_and_add(count, 1);
        return;
    }
    if (listen_overflows_by_port.insert(&key, &one) == 0)
        return;
    count = listen_overflows_by_port.lookup(&key);
    if (count)
        __sync_fetch_and_add(count, 1);
    else
        count_uncounted(UNCOUNTED_LISTEN_MAP_FULL);
}

/* args: the tracepoint's arguments (TP_PROTO); ctx: the program's context, for the stack walk. */
static __always_inline int on_kfree_skb(void *ctx, const u64 *args)
{
    const void *skb = (const void *)args[0];
    u64 location = args[1];
#ifdef NETPROF_DROP_REASONS_FROM_SITES
    u32 reason = reason_of_site(location);
#else
    u32 reason = (u32)args[2];
#endif

    if (reason == (u32)NETPROF_DROP_REASON_NOT_SPECIFIED) {
        count_uncounted(UNCOUNTED_NOT_SPECIFIED);
        return 0;
    }
    if (reason == (u32)NETPROF_DROP_REASON_NOT_DROPPED_YET || reason == (u32)NETPROF_DROP_REASON_CONSUMED) {
        count_uncounted(UNCOUNTED_NOT_A_DROP);
        return 0;
    }

#ifdef NETPROF_KFREE_SKB_HAS_RX_SK
    const void *rx_sk = (const void *)args[3];
#else
    const void *rx_sk = 0;  /* the tracepoint gained rx_sk in Linux 6.11 */
#endif
    /* The device before the owning socket: a packet that crossed a veth into another pod
     * still carries its sender's socket on kernels that do not orphan it there (6.1), and
     * a drop on the receiving side (CPU_BACKLOG at enqueue_to_backlog) belongs to the pod
     * whose device holds it. Where both are set in one netns the order changes nothing;
     * a UDP skb in a receive queue has no device (dev_scratch), so its socket names it. */
    u32 netns = rx_sk ? netns_inode_of_sock(rx_sk) : 0;
    if (!netns)
        netns = netns_inode_of_skb_dev(skb);
    if (!netns)
        netns = netns_inode_of_skb_owner(skb);

    struct drop_key key = {};
    key.location = location;
    key.netns_inode = netns;
    key.reason = reason;
    struct drop_count *count = count_drop(&key);
#ifdef NETPROF_DROPS_FLOWS
    count_tcp_flow_drop(skb, &key);
#endif
#ifdef NETPROF_DROPS_STACKS
    if (count) {
        int flag_slot = 0;
        u32 *paused = drop_stacks_paused.lookup(&flag_slot);
        if (!paused || !*paused)
            sample_drop_stack(ctx, &count->stack, netns, reason);
    }
#endif
    /* rx_sk of a listen overflow is the listener: the final ACK found its accept queue full. */
    if (reason == (u32)NETPROF_DROP_REASON_TCP_LISTEN_OVERFLOW && rx_sk)
        count_listen_overflow(rx_sk, netns);
    return 0;
}

#ifdef NETPROF_DROPS_RCVQUEUE_FULL
/* TP_PROTO(struct sock *sk, struct sk_buff *skb) */
static __always_inline int on_sock_rcvqueue_full(const u64 *args)
{
    u32 netns = netns_inode_of_sock((const void *)args[0]);
    u64 one = 1;
    u64 *count = rcvqueue_full_by_netns.lookup(&netns);
    if (count) {
        __sync_fetch_and_add(count, 1);
        return 0;
    }
    if (rcvqueue_full_by_netns.insert(&netns, &one) == 0)
        return 0;
    count = rcvqueue_full_by_netns.lookup(&netns);
    if (count)
        __sync_fetch_and_add(count, 1);
    else
        count_uncounted(UNCOUNTED_RCVQUEUE_MAP_FULL);
    return 0;
}
#endif

/* The hooks. Typed (tp_btf): plain functions, named so that BCC neither loads nor attaches
 * them (profiler/kernel/typed_tracepoint.py loads them: BCC cannot); ctx is the arguments
 * array itself. Otherwise raw tracepoints, which BCC attaches at load. */
#ifdef NETPROF_TYPED_LOADS
int tp_btf__kfree_skb(u64 *ctx)
{
    return on_kfree_skb(ctx, ctx);
}
#ifdef NETPROF_DROPS_RCVQUEUE_FULL
int tp_btf__sock_rcvqueue_full(u64 *ctx)
{
    return on_sock_rcvqueue_full(ctx);
}
#endif
#else
RAW_TRACEPOINT_PROBE(kfree_skb)
{
    return on_kfree_skb(ctx, (const u64 *)ctx->args);
}
#ifdef NETPROF_DROPS_RCVQUEUE_FULL
RAW_TRACEPOINT_PROBE(sock_rcvqueue_full)
{
    return on_sock_rcvqueue_full((const u64 *)ctx->args);
}
#endif
#endif
