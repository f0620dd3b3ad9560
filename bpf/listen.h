/* Shared by listen.bpf.c and profiler/probes/listen.py (LISTEN_CALL_KEY, LISTEN_CALL dtypes);
 * tests/unit/test_listen_layout.py and the integration test check the two agree. */
#ifndef NETPROF_LISTEN_H
#define NETPROF_LISTEN_H

/* One socket the application called listen(2) on, as the calling process names it. */
struct listen_call_key {
    u32 tgid;        /* process id in the root pid namespace (what /proc/<tgid> shows) */
    u32 fd;          /* the file descriptor passed to listen() */
};

struct listen_call {
    s32 backlog;     /* what the application asked for, before the kernel caps it at somaxconn */
    u32 calls;       /* listen() calls on this (tgid, fd): a re-listen changes the backlog */
    u64 called_ns;   /* bpf_ktime_get_ns() of the latest call: tells Python the entry changed */
};

#endif
