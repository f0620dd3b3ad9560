/* The floor through raw tracepoints: the same hooks as floor.bpf.c, each program returning
 * at once, attached with BPF_RAW_TRACEPOINT_OPEN. The kernel then hands the tracepoint's
 * arguments to the program as they are: no perf event record is filled (perf_trace_<event>,
 * napi_poll's device-name copy), which is most of what a tracepoint costs before a program
 * runs. sys_enter_listen stays a tracepoint (the raw sys_enter fires for every syscall).
 */
RAW_TRACEPOINT_PROBE(softirq_raise) { return 0; }
RAW_TRACEPOINT_PROBE(softirq_entry) { return 0; }
RAW_TRACEPOINT_PROBE(softirq_exit) { return 0; }
RAW_TRACEPOINT_PROBE(napi_poll) { return 0; }
RAW_TRACEPOINT_PROBE(kfree_skb) { return 0; }
RAW_TRACEPOINT_PROBE(tcp_retransmit_skb) { return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_listen) { return 0; }
RAW_TRACEPOINT_PROBE(sock_rcvqueue_full) { return 0; }
