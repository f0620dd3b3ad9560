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

static __always_inline u32 netns_inode_of_sock(const void *sk)
{
    void *net = 0;
    u32 inode = 0;

    if (!sk)
        return 0;
    /* skc_net is a possible_net_t: a struct holding one struct net pointer. */
    bpf_probe_read_kernel(&net, sizeof(net), (const char *)sk + NETPROF_SOCK_NET_OFFSET);
    if (!net)
        return 0;
    bpf_probe_read_kernel(&inode, sizeof(inode), (const char *)net + NETPROF_NET_INUM_OFFSET);
    return inode;
}

#endif
