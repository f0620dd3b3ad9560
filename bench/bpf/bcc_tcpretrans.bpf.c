/* BCC's tcpretrans (tools/tcpretrans.py, v0.26), its tracepoint path, for kernels without
 * headers: the same per-event work (two socket field reads, one skb->cb read, a 64-byte
 * record and one perf_submit per retransmit), with the struct field accesses BCC would
 * rewrite into bpf_probe_read_kernel written out at BTF offsets (-D macros from
 * bench/tracers.py). The stock tool needs <net/sock.h>, which this kernel does not ship.
 */
#define AF_INET 2
#define AF_INET6 10
#define RETRANSMIT 1

struct ipv4_data_t {
    u32 pid;
    u64 ip;
    u32 seq;
    u32 saddr;
    u32 daddr;
    u16 lport;
    u16 dport;
    u64 state;
    u64 type;
};
BPF_PERF_OUTPUT(ipv4_events);

struct ipv6_data_t {
    u32 pid;
    u32 seq;
    u64 ip;
    unsigned __int128 saddr;
    unsigned __int128 daddr;
    u16 lport;
    u16 dport;
    u64 state;
    u64 type;
};
BPF_PERF_OUTPUT(ipv6_events);

TRACEPOINT_PROBE(tcp, tcp_retransmit_skb)
{
    u32 seq = 0;
    u32 pid = bpf_get_current_pid_tgid() >> 32;
    const char *skp = (const char *)args->skaddr;
    const char *skb = (const char *)args->skbaddr;
    u16 lport = args->sport;
    u16 dport = args->dport;
    char state = 0;
    u16 family = 0;
    bpf_probe_read_kernel(&state, sizeof(state), skp + SOCK_STATE_OFFSET);
    bpf_probe_read_kernel(&family, sizeof(family), skp + SOCK_FAMILY_OFFSET);
    if (skb)
        bpf_probe_read_kernel(&seq, sizeof(seq), skb + SKB_CB_OFFSET + TCP_SKB_CB_SEQ_OFFSET);

    if (family == AF_INET) {
        struct ipv4_data_t data4 = {};
        data4.pid = pid;
        data4.lport = lport;
        data4.dport = dport;
        data4.type = RETRANSMIT;
        data4.ip = 4;
        data4.seq = seq;
        data4.state = state;
        __builtin_memcpy(&data4.saddr, args->saddr, sizeof(data4.saddr));
        __builtin_memcpy(&data4.daddr, args->daddr, sizeof(data4.daddr));
        ipv4_events.perf_submit(args, &data4, sizeof(data4));
    } else if (family == AF_INET6) {
        struct ipv6_data_t data6 = {};
        data6.pid = pid;
        data6.lport = lport;
        data6.dport = dport;
        data6.type = RETRANSMIT;
        data6.ip = 6;
        data6.seq = seq;
        data6.state = state;
        __builtin_memcpy(&data6.saddr, args->saddr_v6, sizeof(data6.saddr));
        __builtin_memcpy(&data6.daddr, args->daddr_v6, sizeof(data6.daddr));
        ipv6_events.perf_submit(args, &data6, sizeof(data6));
    }
    return 0;
}
