/* Shared by napi.bpf.c and profiler/probes/napi.py (DEVICE_KEY, NAPI_COUNTS dtypes);
 * tests/unit/test_napi.py checks the two agree byte for byte. */
#ifndef NETPROF_NAPI_H
#define NETPROF_NAPI_H

#define NETPROF_IFNAMSIZ 16

struct napi_device_key {
    u32 netns_inode;               /* the device's netns; 0 for the per-CPU backlog */
    char name[NETPROF_IFNAMSIZ];   /* as the tracepoint gives it: "(no_device)" for the backlog */
};

/* Per-CPU value of napi_by_device. */
struct napi_counts {
    u64 polls;             /* napi_poll events */
    u64 packets;           /* sum of work: packets the polls handled */
    u64 budget_exhausted;  /* polls that used their whole budget: the device had more */
};

#endif
