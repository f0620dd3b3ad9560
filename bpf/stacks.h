/* Kernel stacks sampled in the kernel on a CPU-time budget, for flame graphs (drops.bpf.c,
 * retransmits.bpf.c).
 *
 * A stack walk (bpf_get_stackid) is by far the most expensive thing these programs do: 5 µs
 * on bare 6.18, 20–40 µs on a virtualised machine, against a few hundred ns for the rest of
 * a drop. A budget in stacks per second bounds the count, not the time, so in a storm the
 * walks alone took ≈8% of each CPU. Here the budget is CPU time, measured by the program's
 * own clock around each walk:
 *
 *   - Each CPU earns walk credit at NETPROF_STACK_SHARE_PPM of elapsed time (default 5000:
 *     0.5% of the CPU), capped at NETPROF_STACK_CREDIT_MAX_NS. A walk needs credit > 0 and
 *     costs what it measured. Whatever the event rate, walks take at most the share of each
 *     CPU over time, plus one cap.
 *   - A sampling key — (site, reason, pod) for drops, the pod for retransmits — is walked at
 *     most once per NETPROF_STACK_SPACING_NS (10 ms) on one CPU, so a storm on one site
 *     takes ≤100 walks/s per CPU and leaves credit to other keys. A key not walked for
 *     NETPROF_STACK_RARE_NS (1 s; never walked included) may borrow down to minus the cap,
 *     so a rare site is sampled even while storms have spent the credit; the debt is repaid
 *     from later credit, so the long-run share still holds.
 *   - Each walk stands for the events of its key not walked since the previous one on this
 *     CPU (`pending`, carried per key per CPU): its stack's count is that weight, and the
 *     stack's `samples` is the number of walks. Counts over stacks stay proportional to
 *     events, and sum to them exactly but for each key's still-pending tail.
 *
 * Stack maps recycle: a program has two (generation 0 and 1). User space advances an epoch
 * in a one-entry array at every fold (the active generation is epoch & 1), reads the
 * generation just left, and clears the other one (quiet for a whole interval, so no program
 * is still writing to it) before making it active again. A long run never fills a stack map
 * with stacks of the past.
 *
 * What cannot be counted is counted in a per-CPU array indexed by these slots, mirrored by
 * STACK_LOST_SLOTS in profiler/kernel/stacks.py. Lost slots count events (a walk's weight).
 */
#ifndef NETPROF_STACKS_H
#define NETPROF_STACKS_H

enum stack_lost_slot {
    /* bpf_get_stackid failed: another stack already holds this stack's hash bucket
     * (-EEXIST; the map never replaces, so ids stay stable within a generation), or no stack
     * could be taken. */
    STACK_LOST_NO_STACK_ID = 0,
    /* the per-stack counter map is full. */
    STACK_LOST_COUNTER_MAP_FULL = 1,
    STACK_LOST_SLOTS = 2,
};

#ifndef NETPROF_STACK_SHARE_PPM
#define NETPROF_STACK_SHARE_PPM 5000
#endif
#ifndef NETPROF_STACK_CREDIT_MAX_NS
#define NETPROF_STACK_CREDIT_MAX_NS 1000000LL
#endif
#ifndef NETPROF_STACK_SPACING_NS
#define NETPROF_STACK_SPACING_NS 10000000ULL
#endif
#ifndef NETPROF_STACK_CHECK_EVERY
#define NETPROF_STACK_CHECK_EVERY 16   /* a power of two */
#endif
#ifndef NETPROF_STACK_RARE_NS
#define NETPROF_STACK_RARE_NS 1000000000ULL
#endif

/* One per CPU per program (a per-CPU array of one): only that CPU's programs touch it, and
 * BPF tracing programs never nest on a CPU, so plain arithmetic is safe. User space reads
 * the counters (STACK_SAMPLER dtype in profiler/kernel/stacks.py). */
struct stack_sampler {
    u64 refilled_ns;      /* program clock at the last credit refill */
    s64 credit_ns;        /* walk time this CPU may still spend (negative: borrowed) */
    u64 walks;            /* stack walks taken */
    u64 walk_ns;          /* their time, by the program's clock */
    u64 skipped_spacing;  /* checks that found their key walked < spacing ago here (a busy
                           * drop key is checked once per NETPROF_STACK_CHECK_EVERY events) */
    u64 skipped_budget;   /* events not walked: this CPU's credit was spent */
};

/* Per sampling key, per CPU. */
struct stack_key_state {
    u64 walked_ns;        /* program clock at this key's last walk on this CPU (0: never) */
    u64 pending;          /* events since, not yet attributed to a stack */
    u32 stack_id;         /* the last walk's stack, in the stack map of epoch & 1 */
    u32 epoch;            /* the generation array's value at that walk (0: no stack) */
};

/* Value of the per-stack counter maps, keyed by (…, stack id, generation). */
struct stack_count {
    u64 events;           /* events these walks stand for (weights) */
    u64 samples;          /* walks that gave this stack */
};

/* Whether to walk now. The map lookups stay in each program: BCC rewrites a map call only
 * where the map is named, never inside a shared function or a macro, so only the
 * arithmetic lives here. */
static __always_inline bool stack_walk_allowed(struct stack_sampler *sampler, const struct stack_key_state *key,
                                               u64 now_ns)
{
    u64 since = now_ns - key->walked_ns;
    if (key->walked_ns && since < NETPROF_STACK_SPACING_NS) {
        sampler->skipped_spacing += 1;
        return false;
    }
    u64 elapsed = now_ns - sampler->refilled_ns;
    if (elapsed > 1000000000ULL)
        elapsed = 1000000000ULL;  /* the cap is far below a second's credit; no overflow */
    s64 credit = sampler->credit_ns + (s64)(elapsed * NETPROF_STACK_SHARE_PPM / 1000000ULL);
    if (credit > NETPROF_STACK_CREDIT_MAX_NS)
        credit = NETPROF_STACK_CREDIT_MAX_NS;
    sampler->credit_ns = credit;
    sampler->refilled_ns = now_ns;
    if (credit > 0)
        return true;
    if ((!key->walked_ns || since >= NETPROF_STACK_RARE_NS) && credit > -NETPROF_STACK_CREDIT_MAX_NS)
        return true;
    sampler->skipped_budget += 1;
    return false;
}

/* After a walk that took walk_ns: charge it, and take the key's weight (this event and the
 * pending ones) for the stack. The stack is remembered, so that at the end of a capture
 * user space can give the key's last pending events to it. */
static __always_inline u64 stack_walk_done(struct stack_sampler *sampler, struct stack_key_state *key, u64 now_ns,
                                           u64 walk_ns, int stack_id, u32 epoch)
{
    u64 weight = key->pending + 1;
    sampler->credit_ns -= (s64)walk_ns;
    sampler->walks += 1;
    sampler->walk_ns += walk_ns;
    key->walked_ns = now_ns ? now_ns : 1;
    key->pending = 0;
    key->stack_id = stack_id < 0 ? 0 : (u32)stack_id;
    key->epoch = stack_id < 0 ? 0 : epoch;
    return weight;
}

#endif
