/* Shared by retransmits.bpf.c and profiler/probes/retransmits.py (FLOW_KEY dtype);
 * tests/unit/test_layouts.py checks the two agree byte for byte. */
#ifndef NETPROF_RETRANSMITS_H
#define NETPROF_RETRANSMITS_H

struct retransmit_flow_key {
    u32 netns_inode;
    u16 family;      /* AF_INET or AF_INET6 */
    u16 sport;       /* host byte order, as the tracepoint gives it */
    u16 dport;
    u8 state;        /* TCP state at the retransmit (TCP_ESTABLISHED = 1, ...) */
    u8 _pad;
    u8 saddr[16];    /* IPv4 in the first 4 bytes */
    u8 daddr[16];
};

/* Retransmits per kernel stack (with -DNETPROF_RETRANSMIT_STACKS). */
struct retransmit_stack_key {
    u32 netns_inode;
    u32 stack_id;    /* index into retransmit_stack_traces_<generation> */
    u32 generation;  /* 0 or 1: which stack map (bpf/stacks.h) */
};

/* Value of retransmits_by_netns and retransmits_by_flow. */
struct retransmit_counts {
    u64 retransmits;  /* retransmitted skbs: one per tracepoint hit */
    u64 segments;     /* MSS segments in them: comparable to the RetransSegs SNMP counter */
};

#endif
