/* Network namespace of a kernel socket, without kernel headers.
 *
 * netprof compiles against a header shim (profiler/kernel/shim.py), so struct sock and
 * struct net are never declared here. The offsets are read from the running kernel's BTF
 * and passed in as -D macros:
 *   NETPROF_SOCK_NET_OFFSET   offsetof(struct sock, __sk_common.skc_net)   (48 on 6.18)
 *   NETPROF_NET_INUM_OFFSET   offsetof(struct net, ns) + offsetof(struct ns_common, inum)
 * The netns inode is what `stat /run/netns/<name>` and `readlink /proc/<pid>/ns/net` show,
 * which is how Python maps it to a pod.
 */
#ifndef NETPROF_NETNS_H
#define NETPROF_NETNS_H

#if !defined(NETPROF_SOCK_NET_OFFSET) || !defined(NETPROF_NET_INUM_OFFSET)
#error "netns offsets must come from BTF (-DNETPROF_SOCK_NET_OFFSET, -DNETPROF_NET_INUM_OFFSET)"
#endif

/* The `type` at kernel address base + offset; 0 where it cannot be read.
 *
 * In a program loaded typed (-DNETPROF_TYPED_LOADS: tp_btf, profiler/kernel/typed_tracepoint.py)
 * base derives from a typed argument, and a plain load is what the verifier wants: it checks
 * offset and size against the BTF struct, and the kernel makes the load fault-safe (a fault
 * gives 0). Elsewhere it is a bpf_probe_read_kernel, a helper call that costs ≈35–40 ns on
 * the benchmark machine (bench/README.md): most of what a drop's pod costs. */
#ifdef NETPROF_TYPED_LOADS
#define NETPROF_KERNEL_LOAD(type, base, offset) (*(type const *)((const char *)(base) + (offset)))
#else
#define NETPROF_KERNEL_LOAD(type, base, offset) ({                                      \
        type netprof_loaded_ = 0;                                                        \
        bpf_probe_read_kernel(&netprof_loaded_, sizeof(netprof_loaded_), (const char *)(base) + (offset)); \
        netprof_loaded_;                                                                 \
    })
#endif

static __always_inline u32 netns_inode_of_sock(const void *sk)
{
    if (!sk)
        return 0;
    /* skc_net is a possible_net_t: a struct holding one struct net pointer. */
    const void *net = NETPROF_KERNEL_LOAD(const void *, sk, NETPROF_SOCK_NET_OFFSET);
    if (!net)
        return 0;
    return NETPROF_KERNEL_LOAD(u32, net, NETPROF_NET_INUM_OFFSET);
}

#endif
