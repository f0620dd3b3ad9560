/* BCC's tcpdrop (tools/tcpdrop.py, v0.26), its skb:kfree_skb path, for kernels without
 * headers: for every free with a reason past NOT_SPECIFIED and an owning socket, the same
 * reads of the socket and of the packet's IP and TCP headers, one kernel stack walk and one
 * perf_submit, as the stock tool does (it needs <net/sock.h>, which this kernel does not
 * ship). Field accesses BCC would rewrite into bpf_probe_read_kernel are written out at
 * BTF offsets (-D macros from bench/tracers.py).
 */
#define AF_INET 2
#define AF_INET6 10

enum skb_drop_reason { TCPDROP_DROP_REASON_PLACEHOLDER };

BPF_STACK_TRACE(stack_traces, 1024);

struct ipv4_data_t {
    u32 pid;
    u64 ip;
    u32 saddr;
    u32 daddr;
    u16 sport;
    u16 dport;
    u8 state;
    u8 tcpflags;
    u32 stack_id;
};
BPF_PERF_OUTPUT(ipv4_events);

struct ipv6_data_t {
    u32 pid;
    u64 ip;
    unsigned __int128 saddr;
    unsigned __int128 daddr;
    u16 sport;
    u16 dport;
    u8 state;
    u8 tcpflags;
    u32 stack_id;
};
BPF_PERF_OUTPUT(ipv6_events);

struct tcp_ports_flags {
    u16 source;
    u16 dest;
    u32 seq;
    u32 ack_seq;
    u8 doff_res;
    u8 flags;
};

struct ipv4_addrs {
    u8 ihl_version;
    u8 tos;
    u16 tot_len;
    u16 id;
    u16 frag_off;
    u8 ttl;
    u8 protocol;
    u16 check;
    u32 saddr;
    u32 daddr;
};

static __always_inline u16 ntohs16(u16 value)
{
    return (value >> 8) | (value << 8);
}

static int __trace_tcp_drop(void *ctx, const char *sk, const char *skb)
{
    if (sk == NULL)
        return 0;
    u32 pid = bpf_get_current_pid_tgid() >> 32;

    u16 family = 0;
    char state = 0;
    bpf_probe_read_kernel(&family, sizeof(family), sk + SOCK_FAMILY_OFFSET);
    bpf_probe_read_kernel(&state, sizeof(state), sk + SOCK_STATE_OFFSET);

    const char *head = 0;
    u16 transport_header = 0, network_header = 0;
    bpf_probe_read_kernel(&head, sizeof(head), skb + SKB_HEAD_OFFSET);
    bpf_probe_read_kernel(&transport_header, sizeof(transport_header), skb + SKB_TRANSPORT_HEADER_OFFSET);
    bpf_probe_read_kernel(&network_header, sizeof(network_header), skb + SKB_NETWORK_HEADER_OFFSET);
    struct tcp_ports_flags tcp = {};
    struct ipv4_addrs ip = {};
    bpf_probe_read_kernel(&tcp, sizeof(tcp), head + transport_header);
    bpf_probe_read_kernel(&ip, sizeof(ip), head + network_header);
    u16 sport = ntohs16(tcp.source);
    u16 dport = ntohs16(tcp.dest);

    if (family == AF_INET) {
        struct ipv4_data_t data4 = {};
        data4.pid = pid;
        data4.ip = 4;
        data4.saddr = ip.saddr;
        data4.daddr = ip.daddr;
        data4.dport = dport;
        data4.sport = sport;
        data4.state = state;
        data4.tcpflags = tcp.flags;
        data4.stack_id = stack_traces.get_stackid(ctx, 0);
        ipv4_events.perf_submit(ctx, &data4, sizeof(data4));
    } else if (family == AF_INET6) {
        struct ipv6_data_t data6 = {};
        data6.pid = pid;
        data6.ip = 6;
        data6.dport = dport;
        data6.sport = sport;
        data6.state = state;
        data6.tcpflags = tcp.flags;
        data6.stack_id = stack_traces.get_stackid(ctx, 0);
        ipv6_events.perf_submit(ctx, &data6, sizeof(data6));
    }
    return 0;
}

TRACEPOINT_PROBE(skb, kfree_skb)
{
    const char *skb = (const char *)args->skbaddr;
    const char *sk = 0;
    bpf_probe_read_kernel(&sk, sizeof(sk), skb + SKB_SK_OFFSET);
    u32 reason = (u32)args->reason;

    if (reason > DROP_REASON_NOT_SPECIFIED)
        return __trace_tcp_drop(args, sk, skb);
    return 0;
}
