/* Shared by conntrack_confirm.bpf.c and profiler/probes/conntrack_confirm.py (CONFIRM_KEY,
 * CONFIRM_COUNT dtypes); tests/unit/test_kprobe_layouts.py checks the two agree. */
#ifndef NETPROF_CONNTRACK_CONFIRM_H
#define NETPROF_CONNTRACK_CONFIRM_H

struct confirm_key {
    u32 netns;       /* the pod whose packet failed to be confirmed */
};

struct confirm_count {
    u64 failed;      /* __nf_conntrack_confirm returned NF_DROP: the packet was dropped */
    u64 confirmed;   /* every other return: inserted, or a clash the kernel resolved */
};

#endif
