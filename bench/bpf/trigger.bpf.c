/* Programs on the tracepoint bench/c/trigger.c fires, for bench/micro.py: an empty one
 * (the floor's per-event cost) and one that does what netprof's hot programs do per event
 * (a per-CPU array slot incremented). Built with -DTRIGGER_COUNT for the second. */
#ifdef TRIGGER_COUNT
BPF_PERCPU_ARRAY(trigger_count, u64, 1);
#endif

TRACEPOINT_PROBE(syscalls, sys_enter_getppid)
{
#ifdef TRIGGER_COUNT
    int slot = 0;
    u64 *count = trigger_count.lookup(&slot);
    if (count)
        *count += 1;
#endif
    return 0;
}
