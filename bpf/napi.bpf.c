/* NAPI polls per CPU and per device.
 *
 * Hook: raw tracepoint napi_poll (arguments: struct napi_struct *napi, int work, int
 * budget), fired after every poll of a NAPI instance, in NET_RX softirq or in a
 * threaded-NAPI kthread alike. Raw, because as a perf-event tracepoint the kernel fills an
 * event record on every poll, device-name string copy included, which cost more than this
 * program (bench/README.md, "floor-raw"); the name is read here only when the cached key is
 * rebuilt. The per-CPU backlog that netif_rx() and RPS feed (veth without GRO/XDP,
 * loopback, tunnels) has no device: it is named "(no_device)", as the tracepoint names it.
 *
 * Key: device name plus the device's network namespace. Every pod has an "eth0", so the
 * name alone would merge pods; the netns inode comes from napi->dev->nd_net->ns.inum at
 * BTF offsets (NETPROF_NAPI_DEV_OFFSET, NETPROF_NETDEV_NET_OFFSET, NETPROF_NET_INUM_OFFSET).
 *
 * Counts live in a per-CPU array, at a slot each CPU gives a device the first time it polls
 * it; a per-CPU hash maps the key to that CPU's slot. Each CPU adds to its own slots with
 * plain increments, and the hot path below needs no hash of the 20-byte key: the slot is
 * cached with the key. The only shared write is creating a device's hash entry, once.
 *
 * Cost: the key takes a string copy and three dependent pointer reads (napi → dev → net →
 * inum), more than half of what this program costs per poll (measured by bench/: ~115 ns of
 * program time per poll, ~55 ns with the cache below). Consecutive polls on a CPU are
 * nearly always of the same NAPI instance (the per-CPU backlog, or a NIC queue whose IRQ
 * is bound to that CPU), so each CPU keeps the key of the last instance it polled and
 * rebuilds it only when the instance changes, and on every NETPROF_NAPI_KEY_REFRESH-th poll
 * of the same one: a device renamed or moved to another netns (a CNI does both to a veth)
 * keeps its napi_struct, and the refresh bounds how many polls go to its old name.
 */
#include "napi.h"

#if !defined(NETPROF_NAPI_DEV_OFFSET) || !defined(NETPROF_NETDEV_NET_OFFSET) || !defined(NETPROF_NET_INUM_OFFSET) \
    || !defined(NETPROF_NETDEV_NAME_OFFSET)
#error "napi offsets must come from BTF (-DNETPROF_NAPI_DEV_OFFSET, -DNETPROF_NETDEV_NET_OFFSET, ...)"
#endif

BPF_PERCPU_HASH(napi_slot_of_device, struct napi_device_key, struct napi_slot, NETPROF_NAPI_MAX_DEVICES);
BPF_PERCPU_ARRAY(napi_counts_by_slot, struct napi_counts, NETPROF_NAPI_MAX_DEVICES);
/* [0]: slots this CPU has given out. */
BPF_PERCPU_ARRAY(napi_slots_used, u64, 1);
/* [0]: polls not counted because the devices filled napi_slot_of_device or this CPU's slots. */
BPF_PERCPU_ARRAY(napi_map_full, u64, 1);

#define NETPROF_NAPI_KEY_REFRESH 64

/* Per CPU: the last NAPI instance polled there and its key. */
struct napi_last_polled {
    u64 napi;                    /* the napi_struct's address */
    u32 polls_since_refresh;
    u32 slot_plus_one;           /* the key's slot on this CPU + 1; 0: none (maps full) */
    struct napi_device_key key;
};
BPF_PERCPU_ARRAY(napi_last_polled, struct napi_last_polled, 1);

/* The key of a NAPI instance: its device's name and netns, or the backlog's. */
static __always_inline void key_of_napi(const void *napi, struct napi_device_key *key)
{
    void *dev = 0;
    void *net = 0;

    __builtin_memset(key, 0, sizeof(*key));
    if (napi)
        bpf_probe_read_kernel(&dev, sizeof(dev), (const char *)napi + NETPROF_NAPI_DEV_OFFSET);
    if (!dev) {
        /* What include/trace/events/napi.h names a device-less instance (NO_DEV). */
        __builtin_memcpy(key->name, "(no_device)", sizeof("(no_device)"));
        return;
    }
    bpf_probe_read_kernel_str(key->name, sizeof(key->name), (const char *)dev + NETPROF_NETDEV_NAME_OFFSET);
    /* nd_net is a possible_net_t: a struct holding one struct net pointer. */
    bpf_probe_read_kernel(&net, sizeof(net), (const char *)dev + NETPROF_NETDEV_NET_OFFSET);
    if (net)
        bpf_probe_read_kernel(&key->netns_inode, sizeof(key->netns_inode), (const char *)net + NETPROF_NET_INUM_OFFSET);
}

/* This CPU's slot for the key (+ 1), given out on first use; 0 when the maps are full. */
static __always_inline u32 slot_of_device(struct napi_device_key *key)
{
    struct napi_slot *known = napi_slot_of_device.lookup(key);
    if (known && known->slot_plus_one)
        return known->slot_plus_one;
    int zero = 0;
    u64 *used = napi_slots_used.lookup(&zero);
    if (!used || *used >= NETPROF_NAPI_MAX_DEVICES)
        return 0;
    /* Updating a per-CPU hash from a program writes this CPU's copy only; a new entry's
     * other copies start at 0, "no slot there yet". */
    struct napi_slot fresh = { .slot_plus_one = (u32)*used + 1 };
    if (napi_slot_of_device.update(key, &fresh) != 0)
        return 0;
    *used += 1;
    return fresh.slot_plus_one;
}

RAW_TRACEPOINT_PROBE(napi_poll)
{
    int slot = 0;
    struct napi_last_polled *last = napi_last_polled.lookup(&slot);
    if (!last)
        return 0;
    u64 napi = ctx->args[0];
    if (last->napi != napi || ++last->polls_since_refresh >= NETPROF_NAPI_KEY_REFRESH) {
        key_of_napi((const void *)napi, &last->key);
        last->napi = napi;
        last->polls_since_refresh = 0;
        last->slot_plus_one = slot_of_device(&last->key);
    }

    u32 index = last->slot_plus_one - 1;
    struct napi_counts *counts = last->slot_plus_one ? napi_counts_by_slot.lookup(&index) : 0;
    if (!counts) {
        u64 *full = napi_map_full.lookup(&slot);
        if (full)
            *full += 1;
        return 0;
    }
    int work = (int)ctx->args[1];
    int budget = (int)ctx->args[2];
    counts->polls += 1;
    if (work > 0)
        counts->packets += work;
    /* budget 0 is netpoll cleaning TX only: not a receive poll that ran out of budget. */
    if (budget > 0 && work >= budget)
        counts->budget_exhausted += 1;
    return 0;
}
