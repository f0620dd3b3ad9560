/* Conntrack insert failures per pod, at the moment they happen.
 *
 * Why a kprobe: when two CPUs confirm the same new tuple at once (the UDP DNS A/AAAA race,
 * a raw SYN sent twice), __nf_conntrack_confirm() loses the race, bumps the netns'
 * insert_failed statistic and returns NF_DROP; the packet is then dropped by nf_hook_slow
 * with reason NETFILTER_DROP, indistinguishable there from a ruleset's drop. No tracepoint
 * marks the confirm step. The per-netns statistics (profiler/sources/conntrack.py) count it
 * too, but only when read inside each pod's netns; this probe counts it where it happens,
 * pod by pod, with no netns to enter.
 *
 * Hooks: kprobe __nf_conntrack_confirm(skb) notes the pod (the skb's socket's netns, else
 * its device's: a forwarded packet has no socket), keyed by task (pid_tgid) because the
 * confirm can run in process context (local output) and in softirq; the kretprobe reads
 * the verdict. NF_DROP is 0 in every kernel's uapi netfilter.h.
 * nf_conntrack is a module: the symbol exists only once it is loaded.
 */
#include <uapi/linux/ptrace.h>  /* struct pt_regs: the shim's, or the kernel's with headers */
#include "netns.h"
#include "conntrack_confirm.h"

#if !defined(NETPROF_SKB_DEV_OFFSET) || !defined(NETPROF_SKB_SK_OFFSET) || !defined(NETPROF_NETDEV_NET_OFFSET)
#error "skb offsets must come from BTF (see profiler/kernel/offsets.py)"
#endif

#define NETPROF_NF_DROP 0

BPF_HASH(confirm_in_flight, u64, u32, 4096);
BPF_HASH(confirms_by_netns, struct confirm_key, struct confirm_count, NETPROF_MAX_NETNS);

static __always_inline u32 netns_inode_of_packet(const void *skb)
{
    void *sk = 0;
    void *dev = 0;
    void *net = 0;
    u32 inode = 0;

    bpf_probe_read_kernel(&sk, sizeof(sk), (const char *)skb + NETPROF_SKB_SK_OFFSET);
    if (sk)
        return netns_inode_of_sock(sk);
    if (bpf_probe_read_kernel(&dev, sizeof(dev), (const char *)skb + NETPROF_SKB_DEV_OFFSET) || !dev)
        return 0;
    if (bpf_probe_read_kernel(&net, sizeof(net), (const char *)dev + NETPROF_NETDEV_NET_OFFSET) || !net)
        return 0;
    bpf_probe_read_kernel(&inode, sizeof(inode), (const char *)net + NETPROF_NET_INUM_OFFSET);
    return inode;
}

int confirm_entry(struct pt_regs *ctx)
{
    const void *skb = (const void *)PT_REGS_PARM1(ctx);
    u64 task = bpf_get_current_pid_tgid();
    u32 netns = skb ? netns_inode_of_packet(skb) : 0;
    confirm_in_flight.update(&task, &netns);
    return 0;
}

int confirm_return(struct pt_regs *ctx)
{
    u64 task = bpf_get_current_pid_tgid();
    u32 *netns = confirm_in_flight.lookup(&task);
    if (!netns)
        return 0;
    struct confirm_key key = {.netns = *netns};
    confirm_in_flight.delete(&task);

    struct confirm_count zero = {};
    struct confirm_count *count = confirms_by_netns.lookup_or_try_init(&key, &zero);
    if (!count)
        return 0;
    if ((u32)PT_REGS_RC(ctx) == NETPROF_NF_DROP)
        __sync_fetch_and_add(&count->failed, 1);
    else
        __sync_fetch_and_add(&count->confirmed, 1);
    return 0;
}
