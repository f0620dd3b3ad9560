"""Conntrack scenarios: a full table, and insert failures from a two-CPU race.

Conntrack only works in a netns whose ruleset needs it, so each scenario turns it on in the
pods it concerns with one nft `ct state new` rule (a table named after the lab prefix, in the
pod's own netns: it dies with the lab).

Every scenario records the ground truth beside the SNMP counters: the pods' own conntrack
statistics deltas, summed over CPUs, as `conntrack.<counter>` in `ScenarioResult.
counter_deltas` (`result.counter_by_pod("conntrack.drop")`).

Measured on 6.18, 2 CPUs (design §8 and docs/probes/conntrack.md):
- full table: global nf_conntrack_max 64, 200 UDP flows → 135 `drop` (+1 `early_drop`),
  every one an EPERM at the sender and an skb drop NETFILTER_DROP in nf_hook_slow.
- TCP SYN race: ~98% of 20000 rounds end in `insert_failed` (= `drop`) in the sender.
- UDP A/AAAA race through DNAT to three backends: ~99% of rounds clash, and the kernel
  resolves every one (`clash_resolve`), 0 `insert_failed`.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from profiler.lab import run_checked
from profiler.lab.c_helpers import ensure_c_helper
from profiler.lab.scenarios import Scenario, ScenarioResult, ScenarioUnavailable
from profiler.lab.sysctl import restore_sysctls, set_sysctl
from profiler.lab.topology import NETNS_DIR, SUBNET_PREFIX, Lab
from profiler.lab.workload_common import GRACE_S
from profiler.lab.workload_conntrack import burst_argv, sink_argv
from profiler.system.conntrack import ConntrackStats, counter_deltas, read_netns_stats

CONNTRACK_MAX_SYSCTL = "net.netfilter.nf_conntrack_max"
RACE_SOURCE = Path(__file__).with_name("ct_race.c")
COUNTER_PREFIX = "conntrack."


def enable_conntrack(lab: Lab, pod: str) -> None:
    """Make the pod's netns track connections: any `ct` expression registers the hooks."""
    table = lab.prefix
    script = (
        f"add table inet {table}\n"
        f"add chain inet {table} conntrack_output {{ type filter hook output priority 0; policy accept; }}\n"
        f"add rule inet {table} conntrack_output ct state new counter\n"
    )
    run_checked(["ip", "netns", "exec", lab.netns_of(pod), "nft", "-f", "-"], input_text=script)


def read_pod_conntrack(lab: Lab, pod: str) -> ConntrackStats:
    return read_netns_stats(NETNS_DIR / lab.netns_of(pod))


def race_cpus() -> tuple[int, int]:
    """Two CPUs this process may run on; the race needs them to overlap in time."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        raise ScenarioUnavailable(f"the conntrack race needs 2 CPUs, this process may use {len(allowed)}")
    return allowed[0], allowed[1]


def ensure_race_helper(cache_dir: Path | None = None) -> Path:
    """ct_race.c, compiled once per source version into a cache root trusts."""
    return ensure_c_helper(RACE_SOURCE, cache_dir, ("-pthread",))


class ConntrackScenario(Scenario):
    """Common part: conntrack ground truth of every pod, before and after."""

    def __init__(self, prefix: str | None = None) -> None:
        super().__init__(prefix)
        self._conntrack_before: dict[str, ConntrackStats] = {}

    def _read_all(self, lab: Lab) -> dict[str, ConntrackStats]:
        readings = {}
        for pod in lab.pods:
            try:
                readings[pod] = read_pod_conntrack(lab, pod)
            except FileNotFoundError:
                continue  # nf_conntrack not loaded (yet): no ground truth to record
        return readings

    def start(self, duration_s: float) -> None:
        self._conntrack_before = self._read_all(self.setup())
        super().start(duration_s)

    def wait(self, timeout_s: float | None = None) -> ScenarioResult:
        result = super().wait(timeout_s)
        assert self.lab is not None
        after = self._read_all(self.lab)
        merged = {pod: dict(deltas) for pod, deltas in result.counter_deltas.items()}
        for pod, stats in after.items():
            deltas = counter_deltas(self._conntrack_before.get(pod), stats)
            merged.setdefault(pod, {}).update({COUNTER_PREFIX + name: value for name, value in deltas.items()})
            merged[pod][COUNTER_PREFIX + "count_now"] = stats.entries
        self.result = dataclasses.replace(result, counter_deltas=merged)
        return self.result


class ConntrackFullScenario(ConntrackScenario):
    name = "conntrack-full"
    description = (
        "The node-global nf_conntrack_max is lowered to 64 for the fraction of a second in "
        "which `sender` opens 200 UDP flows to `receiver`: conntrack in the sender's netns "
        "refuses the flows beyond 64 (drop, NETFILTER_DROP). `quiet` tracks 5 flows, within "
        "the limit. The limit is restored as soon as the burst is over."
    )
    pod_names = ("sender", "receiver", "quiet")
    expected_pod = "sender"

    def __init__(self, prefix: str | None = None, conntrack_max: int = 64, flows: int = 200,
                 quiet_flows: int = 5, port: int = 9999) -> None:
        super().__init__(prefix)
        self.conntrack_max = conntrack_max
        self.flows = flows
        self.quiet_flows = quiet_flows
        self.port = port

    def prepare(self, lab: Lab) -> None:
        enable_conntrack(lab, "sender")
        enable_conntrack(lab, "quiet")

    def launch(self, lab: Lab, duration_s: float) -> None:
        receiver = lab.pods["receiver"].ip
        sink = self.spawn("receiver", "sink", sink_argv(self.port, duration_s + GRACE_S), background=True)
        self.wait_ready(sink)
        quiet = self.spawn("quiet", "client", burst_argv(receiver, self.port, 20000, self.quiet_flows))
        self.wait_ready(quiet)
        # nf_conntrack_max is node-global (read-only in a child netns): every netns on the
        # node is held to it while it is low, so the window is only as long as the burst.
        set_sysctl(lab.prefix, CONNTRACK_MAX_SYSCTL, self.conntrack_max)
        try:
            sender = self.spawn("sender", "client", burst_argv(receiver, self.port, 20000, self.flows))
            self.wait_ready(sender)
        finally:
            restore_sysctls(lab.prefix)


class TwoCpuRaceScenario(ConntrackScenario):
    """Common part of the two-CPU races: the ct_race helper and the two CPUs it runs on."""

    def __init__(self, prefix: str | None = None, rounds: int = 20000) -> None:
        super().__init__(prefix)
        self.rounds = rounds
        self.cpus = (0, 1)
        self.helper: Path | None = None

    def setup(self) -> Lab:
        # Before any namespace exists: a machine that cannot run the race says so up front.
        if self.helper is None:
            self.cpus = race_cpus()
            self.helper = ensure_race_helper()
        return super().setup()


class ConntrackRaceScenario(TwoCpuRaceScenario):
    name = "conntrack-race"
    description = (
        "`client` sends the same TCP SYN from two threads pinned to two CPUs, released "
        "together, 20000 times (new source port each time): the second confirm of each pair "
        "finds the first's entry and the packet is dropped (insert_failed, drop). `quiet` "
        "tracks 5 UDP flows and has no race."
    )
    pod_names = ("client", "server", "quiet")
    expected_pod = "client"

    def __init__(self, prefix: str | None = None, rounds: int = 20000, port: int = 7777) -> None:
        super().__init__(prefix, rounds)
        self.port = port

    def prepare(self, lab: Lab) -> None:
        enable_conntrack(lab, "client")
        enable_conntrack(lab, "quiet")

    def launch(self, lab: Lab, duration_s: float) -> None:
        assert self.helper is not None
        server = lab.pods["server"].ip
        quiet = self.spawn("quiet", "client", burst_argv(server, self.port, 20000, 5))
        self.wait_ready(quiet)
        self.spawn("client", "racer", [str(self.helper), "tcp-syn", lab.pods["client"].ip, server,
                                       str(self.port), str(self.rounds), str(self.cpus[0]),
                                       str(self.cpus[1])])


class ConntrackDnsRaceScenario(TwoCpuRaceScenario):
    name = "conntrack-dns-race"
    description = (
        "A resolver's A/AAAA race: `client` sends two datagrams at once from one socket (two "
        "threads on two CPUs, new socket and source port each round) to a service address "
        "that nft DNATs at random to `dns1`..`dns3`. The two packets clash in conntrack; "
        "kernels since 5.x resolve UDP clashes (clash_resolve) instead of dropping "
        "(insert_failed), so this shows clashes, not failures, on a recent kernel."
    )
    pod_names = ("client", "dns1", "dns2", "dns3")
    expected_pod = "client"
    backends = ("dns1", "dns2", "dns3")
    service_ip = f"{SUBNET_PREFIX}250"  # in the lab subnet, owned by no pod: DNAT only
    port = 53

    def prepare(self, lab: Lab) -> None:
        table = lab.prefix
        targets = ", ".join(f"{i} : {lab.pods[name].ip}" for i, name in enumerate(self.backends))
        script = (
            f"add table ip {table}\n"
            f"add chain ip {table} service_dnat {{ type nat hook output priority -100; }}\n"
            f"add rule ip {table} service_dnat ip daddr {self.service_ip} udp dport {self.port} "
            f"dnat to numgen random mod {len(self.backends)} map {{ {targets} }}\n"
        )
        run_checked(["ip", "netns", "exec", lab.netns_of("client"), "nft", "-f", "-"], input_text=script)

    def launch(self, lab: Lab, duration_s: float) -> None:
        assert self.helper is not None
        for backend in self.backends:
            sink = self.spawn(backend, "sink", sink_argv(self.port, duration_s + GRACE_S), background=True)
            self.wait_ready(sink)
        self.spawn("client", "racer", [str(self.helper), "udp", self.service_ip, str(self.port),
                                       str(self.rounds), str(self.cpus[0]), str(self.cpus[1])])


SCENARIOS: dict[str, type[Scenario]] = {
    ConntrackFullScenario.name: ConntrackFullScenario,
    ConntrackRaceScenario.name: ConntrackRaceScenario,
    ConntrackDnsRaceScenario.name: ConntrackDnsRaceScenario,
}
