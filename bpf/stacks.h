/* Kernel stacks counted in the kernel, for flame graphs (drops.bpf.c, retransmits.bpf.c).
 *
 * A program that samples stacks keeps a BPF_STACK_TRACE map (stack id → return addresses)
 * and a bounded hash counting events per (what, stack id): one stack walk and one map
 * update per event, no event ever goes to user space. User space reads the counts once per
 * interval and resolves each new stack id once (ids are stable: nothing is ever deleted).
 *
 * The stack walk is the expensive part: measured on 6.18, a drop costs ~0.23 µs in the
 * drops program without it and several µs with it (a 30-frame softirq-over-syscall stack).
 * So stacks are taken within two budgets, both per CPU and reset every second: at most
 * NETPROF_STACKS_PER_S for the CPU, which bounds the stack cost however hard the node drops,
 * and at most NETPROF_STACKS_PER_S_PER_POD for one network namespace, so one pod's drop
 * storm cannot use up the CPU's budget and leave other pods' drops without stacks. Events
 * past either budget are counted, without a stack, as rate_limited. Ordinary drop rates
 * keep every stack.
 *
 * What cannot be counted is counted in a per-CPU array indexed by these slots, mirrored by
 * STACK_LOST_SLOTS in profiler/kernel/stacks.py.
 */
#ifndef NETPROF_STACKS_H
#define NETPROF_STACKS_H

enum stack_lost_slot {
    /* bpf_get_stackid failed: another stack already holds this stack's hash bucket
     * (-EEXIST; the map never evicts, so ids stay stable), or no stack could be taken. */
    STACK_LOST_NO_STACK_ID = 0,
    /* the per-stack counter map is full. */
    STACK_LOST_COUNTER_MAP_FULL = 1,
    /* this CPU, or this pod on this CPU, had used its stack budget for the current second. */
    STACK_LOST_RATE_LIMITED = 2,
    STACK_LOST_SLOTS = 3,
};

#define NETPROF_STACK_BUDGET_WINDOW_NS 1000000000ULL

/* Budgets live in per-CPU maps (an array of one for the CPU, an LRU hash by netns inode
 * for pods): only that CPU's programs touch them, and BPF tracing programs never nest on a
 * CPU, so plain arithmetic is safe. */
struct stack_budget {
    u64 window_start_ns;
    u64 taken;
};

static __always_inline void stack_budget_refresh(struct stack_budget *budget, u64 now_ns)
{
    if (now_ns - budget->window_start_ns >= NETPROF_STACK_BUDGET_WINDOW_NS) {
        budget->window_start_ns = now_ns;
        budget->taken = 0;
    }
}

/* Whether `budget` has a stack left in the current second (refreshing its window). The map
 * lookups around it stay in each program (drop_stack_allowed, retransmit_stack_allowed):
 * BCC rewrites a map call only where the map is named, never inside a shared function or a
 * macro, so only the arithmetic can live here. */
static __always_inline bool stack_budget_open(struct stack_budget *budget, u64 now_ns, u64 per_s)
{
    stack_budget_refresh(budget, now_ns);
    return budget->taken < per_s;
}

#endif
