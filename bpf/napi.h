/* Shared by napi.bpf.c and profiler/probes/napi.py (DEVICE_KEY, DEVICE_SLOT, NAPI_COUNTS dtypes);
 * tests/unit/test_napi.py checks the two agree byte for byte. */
#ifndef NETPROF_NAPI_H
#define NETPROF_NAPI_H

#define NETPROF_IFNAMSIZ 16

struct napi_device_key {
    u32 netns_inode;               /* the device's netns; 0 for the per-CPU backlog */
    char name[NETPROF_IFNAMSIZ];   /* as the tracepoint gives it: "(no_device)" for the backlog */
};

/* Per-CPU value of napi_slot_of_device: where this CPU counts the device. */
struct napi_slot {
    u32 slot_plus_one;   /* index in napi_counts_by_slot + 1; 0: not polled on this CPU yet */
    u32 unused;
};

/* Per-CPU value of napi_counts_by_slot. */
struct napi_counts {
    u64 polls;             /* napi_poll events */
    u64 packets;           /* sum of work: packets the polls handled */
    u64 budget_exhausted;  /* polls that used their whole budget: the device had more */
};

#endif
