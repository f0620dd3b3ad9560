"""Every threshold a detector uses, in one place, with why. docs/findings.md explains them to
operators; a change here changes that document too.

All thresholds are rates over the capture (per second, or a share of time or of traffic),
never raw counts: a 60 s capture must not find more than a 5 s one of the same node.
"""

# --- TCP retransmits ----------------------------------------------------------------------
# Share of a pod's sent segments that were retransmitted. A healthy datacenter network sits
# well below 0.1%; 1% already costs throughput (TCP halves cwnd per loss event); 5% makes
# request latency dominated by retransmission timeouts.
RETRANS_RATIO_WARNING = 0.01
RETRANS_RATIO_CRITICAL = 0.05
# Without the pod's sent-segment count (no netstat for it), an absolute rate stands in.
RETRANS_PER_S_WARNING = 10.0
RETRANS_PER_S_CRITICAL = 100.0
# Fewer retransmits than this over the whole capture is noise (one RTO on an idle conn).
RETRANS_MIN_COUNT = 5
# Drops of a retransmitting flow's packets that are consequences of loss or of teardown, not
# its cause: duplicates that arrive after the retransmit (OLD_DATA/OLD_SEQUENCE/OLD_ACK) and
# queues purged when a socket closes. Every other reason seen on the flow's own 4-tuple is a
# candidate cause and goes into the finding.
DROPS_NOT_A_CAUSE_OF_LOSS = frozenset({"QUEUE_PURGE", "TCP_OLD_DATA", "TCP_OLD_SEQUENCE", "TCP_OLD_ACK",
                                       "TCP_CLOSE", "SOCKET_CLOSE"})
# The drops on a flow's path must explain at least this share of its retransmits to be named
# as the cause in the finding's headline (below it they are evidence only).
DROPS_EXPLAIN_RETRANS_MIN_SHARE = 0.2

# --- Listen queue ---------------------------------------------------------------------------
# Any overflow refuses or delays a client's connection (the SYN or final ACK is dropped and
# the client waits for a retransmission: 1 s, 3 s…). One per second is a user-visible outage.
LISTEN_OVERFLOW_PER_S_CRITICAL = 1.0
# New backlog: room for twice the observed peak demand, rounded up to a power of two,
# at most the kernel's own cap for somaxconn on most configs.
LISTEN_BACKLOG_MAX = 65535

# --- SYN queue --------------------------------------------------------------------------------
SYN_DROPS_PER_S_CRITICAL = 1.0

# --- softirq / NAPI ---------------------------------------------------------------------------
# A CPU spending more than this share of the capture in NET_RX+NET_TX is saturated with
# packet work: its applications are starved and its queues grow.
SOFTIRQ_BUSY_SHARE = 0.5
# ...and is "imbalanced" when it does this many times more than the average of the others.
SOFTIRQ_IMBALANCE_FACTOR = 3.0
# Even an idle-ish node shows some skew; below this share on the busiest CPU, don't bother.
SOFTIRQ_MIN_SHARE = 0.10
# NAPI: a share of polls using their whole budget means the device had more to give; with
# time_squeeze growing, the softirq ran out of budget/time and left packets for later.
NAPI_EXHAUSTED_SHARE_WARNING = 0.10
TIME_SQUEEZE_PER_S_WARNING = 1.0
NETDEV_BUDGET_MAX = 2400  # 8× the default 300: past this one CPU's softirq hogs it
NETDEV_BUDGET_USECS_MAX = 16000

# --- CPU backlog --------------------------------------------------------------------------------
BACKLOG_DROPS_PER_S_CRITICAL = 10.0
NETDEV_MAX_BACKLOG_MAX = 65536

# --- conntrack ----------------------------------------------------------------------------------
CONNTRACK_INSERT_FAILED_PER_S_CRITICAL = 1.0
CONNTRACK_FILL_WARNING = 0.90   # count/max at the end of the capture
CONNTRACK_MAX_CAP = 4_194_304   # ~1.2 GB of conntrack entries at ~300 B: beyond, rethink

# --- socket receive buffers ---------------------------------------------------------------------
RCVBUF_DROPS_PER_S_CRITICAL = 10.0
RMEM_MAX_CAP = 64 * 1024 * 1024
