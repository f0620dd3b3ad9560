/* The accept-queue size each application asked for in listen(2).
 *
 * Hooks, one of:
 *  - fentry on __sys_listen(int fd, int backlog) (-DNETPROF_LISTEN_FENTRY), where the kernel
 *    lets an fentry program load: the function behind listen(2) since Linux 4.17, so the
 *    program runs on listen() calls and nothing else. Loaded by profiler/kernel/fentry.py:
 *    the function below is named so that BCC neither loads nor attaches it.
 *  - else the tracepoint syscalls:sys_enter_listen (fields fd, backlog), which needs no
 *    kprobe and no trampoline, but is a syscall tracepoint: while any program is on one,
 *    every system call of every task on the node takes the traced slow path
 *    (docs/cost.md, "The syscall tax").
 * Both see the same (fd, backlog) before the kernel caps it.
 *
 * The kernel caps the backlog at the socket's netns net.core.somaxconn and keeps
 * min(backlog, somaxconn) as sk_max_ack_backlog, which inet_diag reports as a listener's
 * idiag_wqueue. Recording the uncapped request beside the pod's somaxconn tells a fix which
 * of the two is the limit that bites.
 *
 * Python turns (tgid, fd) into the socket's inode with readlink(/proc/<tgid>/fd/<fd>)
 * and joins it with inet_diag's idiag_inode. listen() is rare (once per server socket),
 * so a small LRU hash is plenty; it never fills, old entries just age out.
 * Not seen: listen() made before netprof started, and io_uring's IORING_OP_LISTEN (6.11+),
 * which does not pass through the syscall (it calls __sys_listen_socket).
 */
#include "listen.h"

BPF_TABLE("lru_hash", struct listen_call_key, struct listen_call, listen_calls,
          NETPROF_MAX_LISTEN_CALLS);

static __always_inline int record_listen(u32 fd, s32 backlog)
{
    struct listen_call_key key = {};
    key.tgid = bpf_get_current_pid_tgid() >> 32;
    key.fd = fd;

    struct listen_call *seen = listen_calls.lookup(&key);
    struct listen_call call = {};
    call.backlog = backlog;
    call.calls = seen ? seen->calls + 1 : 1;
    call.called_ns = bpf_ktime_get_ns();
    listen_calls.update(&key, &call);
    return 0;
}

#ifdef NETPROF_LISTEN_FENTRY
/* ctx: __sys_listen's arguments, one u64 each. */
int fentry____sys_listen(u64 *ctx)
{
    return record_listen((u32)ctx[0], (s32)ctx[1]);
}
#else
TRACEPOINT_PROBE(syscalls, sys_enter_listen)
{
    return record_listen((u32)args->fd, (s32)args->backlog);
}
#endif
