/* Shared by listen_syn_path.bpf.c and profiler/probes/listen_syn_path.py (SYN_DROP_KEY,
 * SYN_DROP_COUNT dtypes); tests/unit/test_kprobe_layouts.py checks the two agree. */
#ifndef NETPROF_LISTEN_SYN_PATH_H
#define NETPROF_LISTEN_SYN_PATH_H

/* Why a listener refused a handshake packet (decided from its queues at entry). */
#define SYN_DROP_SYN_QUEUE_FULL 1     /* SYN queue at sk_max_ack_backlog, syncookies off */
#define SYN_DROP_ACCEPT_QUEUE_FULL 2  /* accept queue above sk_max_ack_backlog */
#define SYN_DROP_OTHER 3              /* refused with neither queue full (route, memory, …) */
/* The final ACK of a handshake refused for a full accept queue: counted here only on
 * kernels whose skb:kfree_skb has no TCP_LISTEN_OVERFLOW reason (before 6.4; 6.1 drops that
 * ACK with NOT_SPECIFIED), see final_ack_entry in listen_syn_path.bpf.c. */
#define SYN_DROP_FINAL_ACK_OVERFLOW 4

struct syn_drop_key {
    u32 netns;       /* the listener's network namespace inode: the pod */
    u16 port;        /* the listener's local port, host byte order */
    u8 cause;        /* SYN_DROP_* */
    u8 pad;
};

struct syn_drop_count {
    u64 drops;
};

#endif
