"""Listen-queue overflow scenarios: one pod's listener overflows, its neighbours stay calm.

Three ways to overflow, because the kernel counts them on different paths (design §8):

- `ListenOverflowScenario`: a tiny-backlog server that never accepts, flooded with connects.
  The queue fills and every later SYN is refused on the SYN path (consume_skb: no drop
  reason), so only ListenOverflows and the sampled queue depth show it.
- `ListenOverflowDropScenario`: the recipe that makes the *final ACK* overflow, the only
  path with a drop reason (TCP_LISTEN_OVERFLOW): fill the accept queue one short of full
  with syncookies off, fire more connects while the client loses their first SYN-ACK;
  the retransmitted SYN-ACKs' ACKs arrive at a full queue. Measured: reason-40 drops
  equal ListenOverflows.
- `ListenSomaxconnScenario`: the application asks for a large backlog but the pod's
  net.core.somaxconn is lower, so somaxconn is the limit that bites.
"""
from __future__ import annotations

import time

from profiler.lab import LabError, run_checked
from profiler.lab import workload_listen as workload
from profiler.lab.scenarios import Scenario
from profiler.lab.sysctl import set_sysctl
from profiler.lab.topology import NETNS_DIR, Lab
from profiler.lab.workload_common import GRACE_S

SERVER_PORT = 8080
CALM_PORT = 8081
# Servers outlive the clients: wait() stops them once the clients are done.
QUEUE_FILL_TIMEOUT_S = 3.0


def _wait_for_accept_queue(lab: Lab, pod: str, port: int, depth: int, timeout_s: float) -> int:
    """Poll the pod's listener through inet_diag until `depth` connections wait in its queue."""
    from profiler.system.listeners import NetnsListeners

    handle = NetnsListeners.open(NETNS_DIR / lab.netns_of(pod))
    try:
        deadline = time.monotonic() + timeout_s
        seen = 0
        while time.monotonic() < deadline:
            seen = max((row.accept_queue for row in handle.listeners() if row.port == port), default=0)
            if seen >= depth:
                return seen
            time.sleep(0.01)
    finally:
        handle.close()
    raise LabError(f"accept queue of {pod}:{port} reached {seen}, not {depth}, in {timeout_s:g}s")


class ListenOverflowScenario(Scenario):
    name = "listen-overflow"
    description = (
        "`server` listens with backlog 4 and never accepts; `flood1` and `flood2` fire "
        "connects at it, so its accept queue stays full and later SYNs are refused "
        "(ListenOverflows in `server` only). `calm` runs a server that accepts everything "
        "`flood2` sends it, and never overflows."
    )
    pod_names = ("server", "flood1", "flood2", "calm")
    expected_pod = "server"

    def __init__(self, prefix: str | None = None, backlog: int = 4, rate: float = 100.0,
                 max_connects: int = 400) -> None:
        super().__init__(prefix)
        self.backlog = backlog
        self.rate = rate
        self.max_connects = max_connects

    def server_backlog(self) -> int:
        return self.backlog

    def launch(self, lab: Lab, duration_s: float) -> None:
        server = self.spawn("server", "server", workload.listen_server_argv(
            SERVER_PORT, self.server_backlog(), duration_s + GRACE_S), background=True)
        calm = self.spawn("calm", "server", workload.listen_server_argv(
            CALM_PORT, 128, duration_s + GRACE_S, accept=True), background=True)
        self.wait_ready(server)
        self.wait_ready(calm)
        count = max(1, min(self.max_connects, int(self.rate * duration_s)))
        server_ip, calm_ip = lab.pods["server"].ip, lab.pods["calm"].ip
        for pod in ("flood1", "flood2"):
            self.spawn(pod, "client", workload.connect_flood_argv(server_ip, SERVER_PORT, count, self.rate, duration_s))
        self.spawn("flood2", "client", workload.connect_flood_argv(
            calm_ip, CALM_PORT, max(1, int(20 * duration_s)), 20, duration_s))


class ListenSomaxconnScenario(ListenOverflowScenario):
    name = "listen-somaxconn"
    description = (
        "As listen-overflow, but `server` asks listen() for a backlog of 64 while its pod's "
        "net.core.somaxconn is 8: the kernel caps the queue at 8, so somaxconn (set in the "
        "pod spec) is the limit to raise, not the application's backlog."
    )

    def __init__(self, prefix: str | None = None, backlog: int = 64, somaxconn: int = 8,
                 rate: float = 100.0, max_connects: int = 400) -> None:
        super().__init__(prefix, backlog=backlog, rate=rate, max_connects=max_connects)
        self.somaxconn = somaxconn

    def prepare(self, lab: Lab) -> None:
        set_sysctl(lab.prefix, "net.core.somaxconn", self.somaxconn, netns=lab.netns_of("server"))


class ListenOverflowDropScenario(Scenario):
    name = "listen-overflow-drops"
    description = (
        "`client` fills the accept queue of `server` (backlog 64, never accepts, syncookies "
        "off in its pod) one short of full, then fires 60 more connects whose first SYN-ACK "
        "it drops; the retransmitted SYN-ACKs complete the handshakes and their final ACKs "
        "hit a full queue: TCP_LISTEN_OVERFLOW drops in `server`, equal to its ListenOverflows."
    )
    pod_names = ("server", "client", "calm")
    expected_pod = "server"

    def __init__(self, prefix: str | None = None, backlog: int = 64, burst: int = 60) -> None:
        super().__init__(prefix)
        self.backlog = backlog
        self.burst = burst

    def prepare(self, lab: Lab) -> None:
        # With syncookies on, SYNs beyond the request-queue limit would be answered with
        # cookies and land on another path; off, the recipe is exact (design §8).
        set_sysctl(lab.prefix, "net.ipv4.tcp_syncookies", 0, netns=lab.netns_of("server"))

    def _drop_first_synacks(self, lab: Lab) -> None:
        """In the client's netns, drop the first SYN-ACK of every new connection to the
        server and let its retransmission through.

        Design §8 drops all SYN-ACKs for 0.5 s and then lifts the drop, which only works
        if the lift (an nft subprocess) lands before the SYN-ACK retransmit timer (1 s); on
        this loaded, shared machine one run in twelve gave 21 reason-40 drops and 42
        SYN-path overflows instead of 118 and 0. Remembering which connections already
        lost one SYN-ACK gives the same sequence of events with no timing at all. The
        table lives in the lab's client namespace and goes with it.
        """
        table = lab.prefix
        synack = (f"ip saddr {lab.pods['server'].ip} tcp sport {SERVER_PORT} "
                  "tcp flags & (syn | ack) == (syn | ack)")
        script = (
            f"add table inet {table}\n"
            f"add set inet {table} synack_lost {{ type ipv4_addr . inet_service; flags dynamic,timeout; timeout 60s; }}\n"
            f"add chain inet {table} input {{ type filter hook input priority 0; policy accept; }}\n"
            f"add rule inet {table} input {synack} ip saddr . tcp dport @synack_lost accept\n"
            f"add rule inet {table} input {synack} add @synack_lost {{ ip saddr . tcp dport }} "
            "counter drop comment \"first SYN-ACK of each connection\"\n"
        )
        run_checked(["ip", "netns", "exec", lab.netns_of("client"), "nft", "-f", "-"], input_text=script)

    def launch(self, lab: Lab, duration_s: float) -> None:
        server = self.spawn("server", "server", workload.listen_server_argv(
            SERVER_PORT, self.backlog, duration_s + GRACE_S), background=True)
        calm = self.spawn("calm", "server", workload.listen_server_argv(
            CALM_PORT, 128, duration_s + GRACE_S, accept=True), background=True)
        self.wait_ready(server)
        self.wait_ready(calm)
        server_ip = lab.pods["server"].ip
        # The kernel calls a queue full when it holds limit + 1, so `backlog` waiting
        # connections is one short: the next handshake still fits, the ones after do not.
        fill = self.spawn("client", "fill", workload.connect_fill_argv(server_ip, SERVER_PORT, self.backlog, duration_s))
        self.wait_ready(fill)
        _wait_for_accept_queue(lab, "server", SERVER_PORT, self.backlog, QUEUE_FILL_TIMEOUT_S)
        self._drop_first_synacks(lab)
        # Each burst connection's SYN-ACK is lost once, so its handshake stays half-open at
        # the server while the queue still has room; the retransmitted SYN-ACKs (1 s later)
        # get through, and their final ACKs find the queue full.
        burst = self.spawn("client", "client", workload.connect_flood_argv(
            server_ip, SERVER_PORT, self.burst, 10_000, duration_s))
        self.wait_ready(burst)


LISTEN_SCENARIOS = {
    cls.name: cls for cls in (ListenOverflowScenario, ListenSomaxconnScenario, ListenOverflowDropScenario)
}
