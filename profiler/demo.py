"""`netprof lab demo`: the README's first command, end to end on this machine.

Fake pods up → one pod's path made lossy → the real profiler captures → report → verdict →
fake pods down (always, even on Ctrl-C or failure).
"""
from __future__ import annotations

import sys

from rich.console import Console

from .capture import Capture
from .lab.scenarios import RetransmitScenario
from .profile import ProfileOptions, run_profile
from .report import print_report

# The clients stop after the workload time; the profiler runs a little longer so a segment
# lost at the very end is still seen when its retransmission timer (≥200 ms) fires.
TAIL_S = 1.0


def run_demo(duration_s: float = 5.0, console: Console | None = None) -> int:
    console = console or Console()
    with RetransmitScenario() as scenario:
        lab = scenario.lab
        console.print(f"[bold]lab[/bold] {lab.prefix}: pods "
                      + ", ".join(f"{p.netns} ({p.ip})" for p in lab.pods.values()))
        console.print(f"[bold]fault[/bold] {scenario.loss_percent:g}% of packets from "
                      f"{lab.pods['lossy'].netns} to port {scenario.port} dropped on the bridge")
        capture = run_profile(
            ProfileOptions(duration_s=duration_s + TAIL_S, interval_s=1.0),
            on_attached=lambda: scenario.start(duration_s),
        )
        scenario.wait()
        document = capture.to_json()
        print_report(document, console)
        neighbours = [p.netns_inode for name, p in lab.pods.items() if name != "lossy"]
        return _verdict(capture, lab.pods["lossy"].netns_inode, neighbours, lab.pods["lossy"].netns, console)


def _verdict(capture: Capture, lossy_inode: int, neighbour_inodes: list[int], lossy_name: str,
             console: Console) -> int:
    """Judge against this lab's own pods only: other traffic on a shared machine is not ours."""
    totals = {pod.netns: pod for pod in capture.pod_totals()}
    lossy = totals.get(lossy_inode)
    worst_other = max((totals[n].retransmits for n in neighbour_inodes if n in totals), default=0)
    if lossy and lossy.retransmits > 0 and lossy.retransmits > 5 * worst_other:
        console.print(f"[bold green]verdict[/bold green]: netprof blames {lossy.pod} "
                      f"({lossy.retransmits} retransmits; its neighbours ≤ {worst_other})")
        return 0
    got = lossy.retransmits if lossy else 0
    console.print(f"[bold red]verdict[/bold red]: expected {lossy_name} to stand out, "
                  f"got {got} retransmits vs ≤ {worst_other} elsewhere")
    return 1


if __name__ == "__main__":
    sys.exit(run_demo())
