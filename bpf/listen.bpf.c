/* The accept-queue size each application asked for in listen(2).
 *
 * Hook: tracepoint syscalls:sys_enter_listen (fields fd, backlog) — a syscall tracepoint,
 * so no kprobe is needed. The kernel caps the backlog at the socket's netns
 * net.core.somaxconn and keeps min(backlog, somaxconn) as sk_max_ack_backlog, which
 * inet_diag reports as a listener's idiag_wqueue. Recording the uncapped request beside
 * the pod's somaxconn tells a fix which of the two is the limit that bites.
 *
 * Python turns (tgid, fd) into the socket's inode with readlink(/proc/<tgid>/fd/<fd>)
 * and joins it with inet_diag's idiag_inode. listen() is rare (once per server socket),
 * so a small LRU hash is plenty; it never fills, old entries just age out.
 * Not seen: listen() made before netprof started, and io_uring's IORING_OP_LISTEN (6.11+),
 * which does not pass through the syscall.
 */
#include "listen.h"

BPF_TABLE("lru_hash", struct listen_call_key, struct listen_call, listen_calls,
          NETPROF_MAX_LISTEN_CALLS);

TRACEPOINT_PROBE(syscalls, sys_enter_listen)
{
    struct listen_call_key key = {};
    key.tgid = bpf_get_current_pid_tgid() >> 32;
    key.fd = (u32)args->fd;

    struct listen_call *seen = listen_calls.lookup(&key);
    struct listen_call call = {};
    call.backlog = (s32)args->backlog;
    call.calls = seen ? seen->calls + 1 : 1;
    call.called_ns = bpf_ktime_get_ns();
    listen_calls.update(&key, &call);
    return 0;
}
