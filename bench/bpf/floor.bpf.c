/* The floor: one program per hook netprof attaches to, each returning at once.
 *
 * What it costs is what any BPF tool pays to be on these hooks at all: the tracepoint is
 * switched on, the kernel fills the event record (perf_trace_<event>, string copies such as
 * napi_poll's device name included) and calls the program: what BCC's tools pay, and the
 * benchmark reports netprof as a ratio to it. netprof is on the softirq and NAPI events
 * through raw tracepoints, which skip the record (floor_raw.bpf.c is that floor).
 * bench/tracers.py checks that these events are the ones netprof attaches to, so the two
 * never drift apart.
 */

/* BCC's generated struct for skb:kfree_skb names `enum skb_drop_reason`; the shim declares
 * no kernel enums (same trick as bpf/drops.bpf.c). */
enum skb_drop_reason { FLOOR_DROP_REASON_PLACEHOLDER };

TRACEPOINT_PROBE(irq, softirq_raise) { return 0; }
TRACEPOINT_PROBE(irq, softirq_entry) { return 0; }
TRACEPOINT_PROBE(irq, softirq_exit) { return 0; }
TRACEPOINT_PROBE(napi, napi_poll) { return 0; }
TRACEPOINT_PROBE(skb, kfree_skb) { return 0; }
TRACEPOINT_PROBE(tcp, tcp_retransmit_skb) { return 0; }
TRACEPOINT_PROBE(syscalls, sys_enter_listen) { return 0; }
RAW_TRACEPOINT_PROBE(sock_rcvqueue_full) { return 0; }
