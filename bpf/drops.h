/* Shared by drops.bpf.c and profiler/probes/drops.py (the *_KEY dtypes and the
 * UNCOUNTED_* slots); tests/unit/test_drops_layout.py checks the two agree. */
#ifndef NETPROF_DROPS_H
#define NETPROF_DROPS_H

#include "stacks.h"

/* One counter per (call site, netns, reason), per CPU: the views by pod, by CPU and by site
 * are sums over it, made in user space once per interval. */
struct drop_key {
    u64 location;     /* kernel text address the tracepoint reports (the dropping call site) */
    u32 netns_inode;  /* 0 when neither rx_sk, skb->sk nor skb->dev named a namespace */
    u32 reason;       /* enum skb_drop_reason value, subsystem bits included */
};

/* Value of drops_by_netns_reason_site, per CPU: the drops, and (with -DNETPROF_DROPS_STACKS)
 * this key's stack sampling state on this CPU, found by the same lookup (bpf/stacks.h). */
struct drop_count {
    u64 count;
    struct stack_key_state stack;
};

/* TCP_LISTEN_OVERFLOW drops by the listening socket (rx_sk) they were charged to. */
struct listen_overflow_key {
    u32 netns_inode;
    u16 port;         /* skc_num: local port, host byte order */
    u16 _pad;
};

/* Drops per kernel stack (with -DNETPROF_DROPS_STACKS): stack_id indexes
 * drop_stack_traces_<generation>; the value is a struct stack_count. */
struct drop_stack_key {
    u32 netns_inode;
    u32 reason;
    u32 stack_id;
    u32 generation;   /* 0 or 1: which stack map */
};

/* TCP drops per flow (with -DNETPROF_DROPS_FLOWS), from the dropped packet's own IP and TCP
 * headers: which flow lost packets where, so a retransmitting pod's finding can name the
 * drop on its path (the same 4-tuple, either direction). */
struct drop_flow_key {
    u64 location;     /* the dropping call site, as in drop_key */
    u32 netns_inode;  /* where it was dropped (as in drop_key), not necessarily the flow's pod */
    u32 reason;
    u16 family;       /* AF_INET or AF_INET6 */
    u16 sport;        /* host byte order */
    u16 dport;
    u16 _pad;
    u8 saddr[16];     /* IPv4 in the first 4 bytes */
    u8 daddr[16];
};

/* Kernels before 5.17 give skb:kfree_skb no reason (-DNETPROF_DROP_REASONS_FROM_SITES): a
 * drop's reason is then its call site's, from the functions whose drops all mean one thing
 * (enqueue_to_backlog: CPU_BACKLOG). User space writes each such function's text range
 * into `drop_site_reasons` (profiler/probes/drop_sites.py); rows past the last have end 0. */
struct drop_site_reason {
    u64 start;        /* [start, end): the function's text, from /proc/kallsyms */
    u64 end;
    u32 reason;       /* a value of profiler/probes/drop_sites.py's SITE_REASONS */
    u32 _pad;
};
#define DROP_SITE_ROWS 16

/* Slots of the per-CPU `drops_uncounted` array: frees that are not drops, and drops a full
 * map could not hold. */
enum drops_uncounted_slot {
    UNCOUNTED_NOT_SPECIFIED = 0,  /* reason NOT_SPECIFIED: generic kfree_skb() callers */
    UNCOUNTED_NOT_A_DROP = 1,     /* NOT_DROPPED_YET / CONSUMED reach kfree_skb on no 6.x path; counted if they ever do */
    UNCOUNTED_DROPS_MAP_FULL = 2,
    UNCOUNTED_LISTEN_MAP_FULL = 3,
    UNCOUNTED_RCVQUEUE_MAP_FULL = 4,
    UNCOUNTED_SLOTS = 5,
};

#endif
