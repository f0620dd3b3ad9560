"""`netprof lab ...`: bring fake pods up and down, and run scenarios netprof should diagnose."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import textwrap
from dataclasses import asdict
from types import FrameType
from typing import Any

from profiler.lab import LabError
from profiler.lab.registry import SCENARIOS
from profiler.lab.scenarios import ScenarioResult
from profiler.lab.workload_common import MAX_RUN_S
from profiler.lab.topology import Lab, down_all, list_labs

LAB_HELP = textwrap.dedent("""\
    A fake pod is a network namespace with `lo` and an `eth0` veth whose peer sits on a
    bridge in a separate "node" namespace, the way a CNI plugin wires a real pod. Addresses
    come from 198.18.0.0/24 (reserved for benchmarking); no namespace has a route out, so lab
    traffic never leaves the namespaces the lab made, and the host's own interfaces,
    addresses and firewall rules are never touched.

    Every object carries a per-run prefix (nplab + 6 hex digits), so several labs can run at
    once and leftovers of a crashed run are easy to find: `netprof lab list` shows them and
    `netprof lab down` removes them, restoring any sysctl a lab changed.

    Inside a pod you can run anything:  ip netns exec <netns> <command>
    Needs root (creating namespaces), iproute2, and nftables for scenarios with faults.
""")

RUN_HELP = textwrap.dedent("""\
    Bring up the scenario's pods, put its fault in place, run its workloads for --duration
    seconds, print what the kernel counted per pod, and remove everything, also on Ctrl-C.
    Start netprof in another terminal while it runs: the pod it should blame is printed
    first. Scenarios:
""") + "\n".join(
    f"  {name}\n" + textwrap.fill(cls.description, width=88, initial_indent=" " * 6, subsequent_indent=" " * 6)
    for name, cls in SCENARIOS.items()
)


def require_root() -> None:
    if os.geteuid() != 0:
        raise LabError("netprof lab needs root (it creates network namespaces); run it with sudo")
    if shutil.which("ip") is None:
        raise LabError("`ip` not found: install iproute2")


def _pod_list(text: str) -> list[str]:
    pods = [name.strip() for name in text.split(",") if name.strip()]
    if not pods:
        raise argparse.ArgumentTypeError("give at least one pod name, e.g. --pods web,api")
    return pods


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    # The scenarios' workloads accept runs up to MAX_RUN_S: a longer one would be accepted
    # here and then refused by a workload, after the lab was up.
    if not 0 < value <= MAX_RUN_S:
        raise argparse.ArgumentTypeError(f"duration must be within (0, {MAX_RUN_S:g}] seconds")
    return value


def _print_pods(lab: Lab, expected_pod: str | None = None) -> None:
    print(f"lab {lab.prefix}   node netns {lab.node_netns} (bridge 198.18.0.1/24)")
    print(f"  {'POD':10} {'IP':12} {'NETNS':26} {'NETNS INODE':>12}  BRIDGE PORT")
    for pod in lab.pods.values():
        mark = "   <- expected to show the problem" if pod.name == expected_pod else ""
        print(f"  {pod.name:10} {pod.ip:12} {pod.netns:26} {pod.netns_inode:>12}  {pod.host_veth}{mark}")


def cmd_up(args: argparse.Namespace) -> int:
    require_root()
    lab = Lab.up(args.pods, prefix=args.prefix)
    lab.detach()
    if args.json:
        print(json.dumps({
            "prefix": lab.prefix, "node_netns": lab.node_netns,
            "pods": {p.name: {**asdict(p), "netns_inode": p.netns_inode} for p in lab.pods.values()},
        }, indent=2))
        return 0
    _print_pods(lab)
    first = next(iter(lab.pods.values()))
    print(f"\nenter a pod:   ip netns exec {first.netns} bash")
    print(f"remove it:     netprof lab down --prefix {lab.prefix}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    require_root()
    if args.prefix is None and not args.force:
        # A lab whose owner still runs is somebody's test or demo in progress: removing it
        # under them turns their run into a confusing failure. Crashed leftovers go.
        removed = []
        for lab in list_labs():
            if lab.owner_alive:
                print(f"skipped {lab.prefix}: in use by pid {lab.owner_pid} (--force removes it)")
                continue
            removed.extend(down_all(lab.prefix))
    else:
        removed = down_all(args.prefix)
    if not removed:
        print("no lab to remove" if args.prefix is None else f"no lab {args.prefix}")
        return 0
    for name in removed:
        print(f"removed {name}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    labs = list_labs()
    if args.json:
        print(json.dumps([
            {"prefix": lab.prefix, "netns": list(lab.netns),
             "pods": {name: asdict(pod) for name, pod in lab.pods.items()},
             "sysctls_pending": lab.sysctls_pending, "owner_pid": lab.owner_pid,
             "owner_alive": lab.owner_alive}
            for lab in labs
        ], indent=2))
        return 0
    if not labs:
        print("no labs")
        return 0
    for lab in labs:
        owner = "left up by `netprof lab up`" if lab.owner_pid is None else (
            f"owner pid {lab.owner_pid} {'running' if lab.owner_alive else 'gone (leftover: netprof lab down)'}")
        print(f"{lab.prefix}: {len(lab.netns)} netns, {lab.sysctls_pending} sysctl(s) to restore, {owner}")
        for pod in lab.pods.values():
            print(f"  {pod.name:10} {pod.ip:12} {pod.netns}")
    return 0


def _print_result(result: ScenarioResult) -> None:
    retransmits = result.retransmits_by_pod
    print(f"\n  {'POD':10} {'ROLE':8} {'BYTES':>10} {'TCP RETRANS':>12}")
    for workload in result.workloads:
        moved = workload.summary.get("bytes", "?")
        note = "" if workload.summary.get("connected", True) else "  (could not connect)"
        print(f"  {workload.pod:10} {workload.role:8} {moved:>10} {retransmits.get(workload.pod, 0):>12}{note}")
    for fault in result.faults:
        print(f"  fault `{fault.comment}` dropped {fault.packets} packets")
    if result.expected_pod is not None:
        others = max((n for pod, n in retransmits.items() if pod != result.expected_pod), default=0)
        verdict = "as expected" if retransmits.get(result.expected_pod, 0) > others else "NOT as expected"
        print(f"  expected pod: {result.expected_pod} ({verdict}, per the pods' own kernel counters)")


def cmd_run(args: argparse.Namespace) -> int:
    require_root()
    scenario = SCENARIOS[args.scenario](prefix=args.prefix)

    def terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt  # same clean path as Ctrl-C

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        with scenario:
            assert scenario.lab is not None
            if not args.json:
                _print_pods(scenario.lab, scenario.expected_pod)
                print(f"\nrunning {scenario.name} for {args.duration:g} s (Ctrl-C stops and removes the lab)",
                      flush=True)
            scenario.start(args.duration)
            result = scenario.wait()
    except KeyboardInterrupt:
        print("interrupted: workloads stopped, lab removed", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    if args.json:
        print(json.dumps(_result_json(result), indent=2))
    else:
        _print_result(result)
    failed = [w for w in result.workloads if w.returncode not in (0, None)]
    return 1 if failed else 0


def _result_json(result: ScenarioResult) -> dict[str, Any]:
    data = asdict(result)
    # Hundreds of counters per pod would bury the point; keep the ones that moved.
    data["counter_deltas"] = {pod: {k: v for k, v in deltas.items() if v}
                              for pod, deltas in result.counter_deltas.items()}
    data["retransmits_by_pod"] = result.retransmits_by_pod
    return data


def add_lab_parser(subparsers: Any) -> Any:
    """Add `lab` and its subcommands to the main CLI's subparsers; handlers return exit codes.
    Returns lab's own subparsers, for commands above the lab to add theirs (`lab demo`)."""
    lab = subparsers.add_parser(
        "lab", help="fake pods in network namespaces, to watch netprof find real problems",
        description=LAB_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    lab.set_defaults(func=lambda args: (lab.print_help(), 2)[1])
    sub = lab.add_subparsers(dest="lab_command", metavar="COMMAND")

    up = sub.add_parser(
        "up", help="create fake pods and leave them running",
        description="Create fake pods wired to a bridge and leave them running until "
                    "`netprof lab down`. Prints each pod's IP, netns and netns inode (the "
                    "id netprof attributes traffic by).",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    up.add_argument("--pods", type=_pod_list, default=["web", "api"], metavar="A,B,...",
                    help="comma-separated pod names (default: web,api); pods get 198.18.0.2, .3, ...")
    up.add_argument("--prefix", help="name prefix, nplab + [0-9a-z] (default: nplab + 6 random hex digits)")
    up.add_argument("--json", action="store_true", help="print the lab as JSON")
    up.set_defaults(func=cmd_up)

    down = sub.add_parser(
        "down", help="remove labs and restore the sysctls they changed",
        description="Remove a lab (or every nplab* lab, including leftovers of crashed runs): "
                    "stop processes still inside its namespaces, delete the namespaces, "
                    "restore every sysctl it changed, and delete its state file.")
    down.add_argument("--prefix", help="only this lab (default: all labs on this node)")
    down.add_argument("--force", action="store_true",
                      help="also remove labs whose owner process is still running")
    down.set_defaults(func=cmd_down)

    listing = sub.add_parser("list", help="show labs on this node, including crashed leftovers",
                             description="Show every lab found by namespace name or state file "
                                         "(/run/netprof/lab), and whether its owner still runs.")
    listing.add_argument("--json", action="store_true", help="print as JSON")
    listing.set_defaults(func=cmd_list)

    run = sub.add_parser("run", help="run a scenario end to end (up, fault, traffic, down)",
                         description=RUN_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    run.add_argument("scenario", choices=sorted(SCENARIOS), help="which problem to reproduce")
    run.add_argument("--duration", type=positive_seconds, default=10.0, metavar="S",
                     help="seconds of traffic (default 10)")
    run.add_argument("--prefix", help="name prefix for the scenario's lab (default: random)")
    run.add_argument("--json", action="store_true", help="print the result as JSON")
    run.set_defaults(func=cmd_run)
    return sub
