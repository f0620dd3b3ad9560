/* Softirq time per CPU and per vector, with run-time and queueing-delay histograms.
 *
 * Hooks: raw tracepoints softirq_raise, softirq_entry, softirq_exit (argument 0: the vector
 * number, stable since 2.6.37; raw tracepoints since 4.17). Raw, because the kernel then
 * hands the argument over as it is: as perf-event tracepoints it first fills an event
 * record on every raise, entry and exit, which cost more than what these programs do
 * (bench/README.md, "floor-raw"). No kprobe, no kernel struct is read.
 *
 * Which vectors: only those in NETPROF_SOFTIRQ_TRACED_MASK, a bit mask Python builds from
 * the vector names in this kernel's BTF (NET_RX and NET_TX by default; vector numbers are
 * never written here). The tracepoints fire for every vector — TIMER, SCHED and RCU each run
 * at least once per tick on every CPU — so an untraced vector costs one compare and return.
 *
 * Every map is a per-CPU array indexed by vector (histograms by vector * slots + slot), so
 * no two CPUs ever touch the same cache line and plain increments are safe: BPF programs
 * of this kind never nest on one CPU (a tracepoint that fires while one of ours runs, e.g.
 * a raise from a hardirq, is skipped by the kernel's per-CPU recursion guard).
 *
 * Semantics on one CPU:
 *  - Handlers of one vector never nest (softirqs run with softirqs disabled, one vector
 *    after another), so one entry timestamp per vector is enough. Run time is wall time
 *    from entry to exit, including hardirqs that interrupted the handler.
 *  - raise is always local: the pending bit it sets is the raising CPU's. A vector may be
 *    raised many times before it runs; the queueing delay is measured from the FIRST raise
 *    after the previous entry (later raises only re-set a bit already set). A raise during
 *    a run is for the next run, since the pending bits are cleared before handlers start.
 *  - An exit whose entry happened before attach is counted as exits_without_entry and
 *    nothing else; a run whose raise happened before attach gives no queue-delay sample.
 *    Both histograms are updated at exit, so the run-time one always sums to count and
 *    the queue-delay one to at most count; queue_delay_ns is the sum of exactly the delays
 *    in the queue-delay histogram (Prometheus' _sum beside its _count).
 *  - Queue delay is sampled: one run in NETPROF_QUEUE_DELAY_SAMPLE_EVERY per CPU and vector,
 *    chosen by a countdown that entry advances, so a raise knows whether the coming run is
 *    sampled and reads the clock only then. A raise is the busiest of the three hooks (it
 *    fires on every raise, pending or not) and the clock read was most of its cost; run
 *    time is still measured on every run. Sampling by run count, not by time, keeps the
 *    histogram's shape (its quantiles) and its sum over its own count (the mean delay).
 */
#include "softirq.h"

#if !defined(NETPROF_NR_SOFTIRQS) || !defined(NETPROF_SOFTIRQ_TRACED_MASK) || !defined(NETPROF_LOG2_SLOTS) \
    || !defined(NETPROF_QUEUE_DELAY_SAMPLE_EVERY)
#error "NETPROF_NR_SOFTIRQS, NETPROF_SOFTIRQ_TRACED_MASK, NETPROF_LOG2_SLOTS and NETPROF_QUEUE_DELAY_SAMPLE_EVERY come from Python"
#endif

BPF_PERCPU_ARRAY(softirq_stats, struct softirq_vector_stats, NETPROF_NR_SOFTIRQS);
BPF_PERCPU_ARRAY(softirq_timestamps, struct softirq_timestamps, NETPROF_NR_SOFTIRQS);
/* Bucket i counts values in [2^i, 2^(i+1)) ns (0 lands in bucket 0, the last bucket holds
 * everything above). */
BPF_PERCPU_ARRAY(softirq_run_time_log2, u64, NETPROF_NR_SOFTIRQS * NETPROF_LOG2_SLOTS);
BPF_PERCPU_ARRAY(softirq_queue_delay_log2, u64, NETPROF_NR_SOFTIRQS * NETPROF_LOG2_SLOTS);

static __always_inline bool vector_traced(u32 vec)
{
    return vec < NETPROF_NR_SOFTIRQS && ((NETPROF_SOFTIRQ_TRACED_MASK >> vec) & 1);
}

static __always_inline u32 log2_slot(u64 value)
{
    u32 slot = 0;

    if (value >> 32) { value >>= 32; slot += 32; }
    if (value >> 16) { value >>= 16; slot += 16; }
    if (value >> 8) { value >>= 8; slot += 8; }
    if (value >> 4) { value >>= 4; slot += 4; }
    if (value >> 2) { value >>= 2; slot += 2; }
    if (value >> 1) slot += 1;
    return slot < NETPROF_LOG2_SLOTS ? slot : NETPROF_LOG2_SLOTS - 1;
}

/* BCC rewrites map accesses only where the map is named, so the lookup stays in the probes. */
static __always_inline u32 histogram_index(u32 vec, u64 value_ns)
{
    return vec * NETPROF_LOG2_SLOTS + log2_slot(value_ns);
}

RAW_TRACEPOINT_PROBE(softirq_raise)
{
    u32 vec = (u32)ctx->args[0];
    if (!vector_traced(vec))
        return 0;
    struct softirq_timestamps *ts = softirq_timestamps.lookup(&vec);
    if (ts && ts->runs_until_delay_sample == 0 && ts->raise_ns == 0)
        ts->raise_ns = bpf_ktime_get_ns();
    return 0;
}

RAW_TRACEPOINT_PROBE(softirq_entry)
{
    u32 vec = (u32)ctx->args[0];
    if (!vector_traced(vec))
        return 0;
    struct softirq_timestamps *ts = softirq_timestamps.lookup(&vec);
    if (!ts)
        return 0;
    ts->entry_ns = bpf_ktime_get_ns();
    ts->entry_raise_ns = ts->raise_ns;
    ts->raise_ns = 0;
    /* Raises from now on are for the next run: say whether that one is sampled. */
    if (ts->runs_until_delay_sample == 0)
        ts->runs_until_delay_sample = NETPROF_QUEUE_DELAY_SAMPLE_EVERY - 1;
    else
        ts->runs_until_delay_sample -= 1;
    return 0;
}

RAW_TRACEPOINT_PROBE(softirq_exit)
{
    u32 vec = (u32)ctx->args[0];
    if (!vector_traced(vec))
        return 0;
    struct softirq_timestamps *ts = softirq_timestamps.lookup(&vec);
    struct softirq_vector_stats *stats = softirq_stats.lookup(&vec);
    if (!ts || !stats)
        return 0;
    if (ts->entry_ns == 0) {
        stats->exits_without_entry += 1;
        return 0;
    }
    u64 run_ns = bpf_ktime_get_ns() - ts->entry_ns;
    stats->count += 1;
    stats->time_ns += run_ns;
    u32 index = histogram_index(vec, run_ns);
    u64 *bucket = softirq_run_time_log2.lookup(&index);
    if (bucket)
        *bucket += 1;
    /* Recorded with the run, not at entry, so the two histograms describe the same runs
     * even when an exit goes unseen (docs/probes/softirq.md, "Known gap"). */
    if (ts->entry_raise_ns != 0 && ts->entry_ns >= ts->entry_raise_ns) {
        u64 delay_ns = ts->entry_ns - ts->entry_raise_ns;
        index = histogram_index(vec, delay_ns);
        bucket = softirq_queue_delay_log2.lookup(&index);
        if (bucket) {
            *bucket += 1;
            /* Summed with the bucket, so the sum covers exactly the delays counted. */
            stats->queue_delay_ns += delay_ns;
        }
    }
    ts->entry_ns = 0;
    return 0;
}
