/* SYNs a listener refused because its SYN queue or its accept queue was full, per (pod
 * netns, listening port, cause).
 *
 * Why a kprobe: no tracepoint sees this drop. tcp_conn_request() refuses the SYN with
 * `goto drop` → tcp_listendrop() (an inline that bumps sk->sk_drops and LINUX_MIB_LISTENDROPS)
 * and the caller frees the skb with consume_skb(), so skb:kfree_skb carries no
 * TCP_LISTEN_OVERFLOW for it (that reason covers only the final-ACK path). The per-netns
 * ListenOverflows / TCPReqQFullDrop counters see it but not which listener. tcp_conn_request
 * is exported (never inlined), kprobe-able on every kernel since 4.x.
 *
 * Hooks: kprobe tcp_conn_request(rsk_ops, af_ops, sk, skb) records the listener, its
 * sk_drops and why a drop would happen (read before the function decides, in the order it
 * checks: a full SYN queue with syncookies off first, then a full accept queue); the
 * kretprobe counts a drop when sk_drops moved during the call. The return value cannot
 * tell: tcp_conn_request returns 0 whether it queued the request or dropped the SYN.
 * SYNs run in softirq, one at a time per CPU, so the entry state lives in a per-CPU slot.
 *
 * Offsets from BTF (profiler/kernel/offsets.py): sk_drops, sk_ack_backlog,
 * sk_max_ack_backlog, icsk_accept_queue.qlen, net->ipv4.sysctl_tcp_syncookies (read as one
 * byte: a u8 since 5.x, the low byte of the older int on little-endian x86).
 */
#include <uapi/linux/ptrace.h>  /* struct pt_regs: the shim's, or the kernel's with headers */
#include "netns.h"
#include "listen_syn_path.h"

#if !defined(NETPROF_SOCK_DROPS_OFFSET) || !defined(NETPROF_SOCK_ACK_BACKLOG_OFFSET) || \
    !defined(NETPROF_SOCK_MAX_ACK_BACKLOG_OFFSET) || !defined(NETPROF_ICSK_SYN_QUEUE_LEN_OFFSET) || \
    !defined(NETPROF_NET_TCP_SYNCOOKIES_OFFSET) || !defined(NETPROF_SOCK_NUM_OFFSET)
#error "listener offsets must come from BTF (see profiler/kernel/offsets.py)"
#endif

struct syn_in_flight {
    const void *sk;
    s32 drops_at_entry;
    u8 cause;
};

BPF_PERCPU_ARRAY(syn_entry_state, struct syn_in_flight, 1);
BPF_PERCPU_ARRAY(final_ack_entry_state, struct syn_in_flight, 1);
BPF_HASH(syn_drops, struct syn_drop_key, struct syn_drop_count, NETPROF_MAX_LISTENERS);

static __always_inline s32 read_s32(const void *base, unsigned long offset)
{
    s32 value = 0;
    bpf_probe_read_kernel(&value, sizeof(value), (const char *)base + offset);
    return value;
}

int syn_entry(struct pt_regs *ctx)
{
    const void *sk = (const void *)PT_REGS_PARM3(ctx);
    int zero = 0;
    struct syn_in_flight *state = syn_entry_state.lookup(&zero);
    if (!state || !sk)
        return 0;

    u32 backlog = (u32)read_s32(sk, NETPROF_SOCK_ACK_BACKLOG_OFFSET);
    u32 max_backlog = (u32)read_s32(sk, NETPROF_SOCK_MAX_ACK_BACKLOG_OFFSET);
    u32 syn_queue = (u32)read_s32(sk, NETPROF_ICSK_SYN_QUEUE_LEN_OFFSET);
    void *net = 0;
    u8 syncookies = 0;
    bpf_probe_read_kernel(&net, sizeof(net), (const char *)sk + NETPROF_SOCK_NET_OFFSET);
    if (net)
        bpf_probe_read_kernel(&syncookies, sizeof(syncookies), (const char *)net + NETPROF_NET_TCP_SYNCOOKIES_OFFSET);

    /* inet_csk_reqsk_queue_is_full(): qlen >= sk_max_ack_backlog; sk_acceptq_is_full():
     * sk_ack_backlog > sk_max_ack_backlog. With syncookies on, a full SYN queue answers
     * with a cookie instead of dropping. */
    u8 cause = SYN_DROP_OTHER;
    if (syn_queue >= max_backlog && syncookies == 0)
        cause = SYN_DROP_SYN_QUEUE_FULL;
    else if (backlog > max_backlog)
        cause = SYN_DROP_ACCEPT_QUEUE_FULL;

    state->sk = sk;
    state->drops_at_entry = read_s32(sk, NETPROF_SOCK_DROPS_OFFSET);
    state->cause = cause;
    return 0;
}

static __always_inline void count_if_dropped(struct syn_in_flight *state)
{
    if (!state || !state->sk)
        return;
    const void *sk = state->sk;
    state->sk = 0;
    if (read_s32(sk, NETPROF_SOCK_DROPS_OFFSET) == state->drops_at_entry)
        return;  /* queued (or answered with a cookie): tcp_listendrop was not called */

    struct syn_drop_key key = {};
    key.netns = netns_inode_of_sock(sk);
    bpf_probe_read_kernel(&key.port, sizeof(key.port), (const char *)sk + NETPROF_SOCK_NUM_OFFSET);
    key.cause = state->cause;
    struct syn_drop_count zero_count = {};
    struct syn_drop_count *count = syn_drops.lookup_or_try_init(&key, &zero_count);
    if (count)
        __sync_fetch_and_add(&count->drops, 1);
}

int syn_return(struct pt_regs *ctx)
{
    int zero = 0;
    count_if_dropped(syn_entry_state.lookup(&zero));
    return 0;
}

/* The final-ACK path, attached only where skb:kfree_skb has no TCP_LISTEN_OVERFLOW reason
 * (profiler/probes/listen_syn_path.py decides). tcp_v{4,6}_syn_recv_sock(sk, skb, req, …)
 * creates the child socket for a completed handshake; with the listener's accept queue
 * full it counts ListenOverflows, calls tcp_listendrop (sk_drops) and returns NULL, and
 * tcp_check_req then drops the ACK (6.1: reason NOT_SPECIFIED, which netprof ignores). */
int final_ack_entry(struct pt_regs *ctx)
{
    const void *sk = (const void *)PT_REGS_PARM1(ctx);
    int zero = 0;
    struct syn_in_flight *state = final_ack_entry_state.lookup(&zero);
    if (!state || !sk)
        return 0;
    state->sk = sk;
    state->drops_at_entry = read_s32(sk, NETPROF_SOCK_DROPS_OFFSET);
    u32 backlog = (u32)read_s32(sk, NETPROF_SOCK_ACK_BACKLOG_OFFSET);
    u32 max_backlog = (u32)read_s32(sk, NETPROF_SOCK_MAX_ACK_BACKLOG_OFFSET);
    state->cause = backlog > max_backlog ? SYN_DROP_FINAL_ACK_OVERFLOW : SYN_DROP_OTHER;
    return 0;
}

int final_ack_return(struct pt_regs *ctx)
{
    int zero = 0;
    struct syn_in_flight *state = final_ack_entry_state.lookup(&zero);
    if (state && PT_REGS_RC(ctx) != 0)
        state->sk = 0;  /* a child socket was made: no drop */
    count_if_dropped(state);
    return 0;
}
