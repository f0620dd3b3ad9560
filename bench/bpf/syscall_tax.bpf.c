/* An empty program where netprof learns each listen(2) backlog, for bench/micro.py's
 * "syscall tax": the time an UNRELATED syscall (getppid) takes while it is attached.
 * Any program on a syscall tracepoint sets the syscall-tracepoint work flag on every task
 * of the node, so every syscall of every process takes the traced slow path; an fentry
 * program on the kernel function costs only calls of that function.
 * Built with -DTAX_FENTRY for the fentry variant, where the kernel lets it load. */
#ifdef TAX_FENTRY
/* Loaded and attached by bench/micro.py through profiler/kernel/fentry.py (BCC does not). */
int fentry____sys_listen(u64 *ctx)
{
    return 0;
}
#else
TRACEPOINT_PROBE(syscalls, sys_enter_listen)
{
    return 0;
}
#endif
