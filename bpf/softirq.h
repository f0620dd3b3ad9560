/* Shared by softirq.bpf.c and profiler/probes/softirq.py (VECTOR_STATS, TIMESTAMPS dtypes);
 * tests/unit/test_softirq.py checks the two agree byte for byte. */
#ifndef NETPROF_SOFTIRQ_H
#define NETPROF_SOFTIRQ_H

/* Value of softirq_stats, one per vector, per CPU. */
struct softirq_vector_stats {
    u64 count;                 /* handler runs seen from entry to exit */
    u64 time_ns;               /* sum of their entry → exit times */
    u64 exits_without_entry;   /* runs already under way when the probe attached */
    u64 queue_delay_ns;        /* sum of the raise → entry delays in softirq_queue_delay_log2 */
};

/* Value of softirq_timestamps, one per vector, per CPU; 0 means "none pending". */
struct softirq_timestamps {
    u64 entry_ns;        /* the handler run in progress started here */
    u64 entry_raise_ns;  /* ... answering the raise made here (0: raised before attach) */
    u64 raise_ns;        /* the first raise not yet followed by an entry */
    u64 runs_until_delay_sample;  /* 0: the next run's queue delay is measured */
};

#endif
