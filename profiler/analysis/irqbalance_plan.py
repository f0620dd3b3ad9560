"""What to do about irqbalance so an IRQ affinity plan holds (issue 19, item 2).

irqbalance re-places every IRQ it does not ban at each pass (profiler/system/irqbalance.py
says what it bans here). For the plan's IRQs there are three ways to make it hold, and this
module words them for this node (its IRQ numbers, its NICs' PCI functions, its settings):
1. stop irqbalance: every other IRQ stays where it is now, nothing re-balances them later;
2. keep it, ban the plan's IRQs: `--banirq=N` per IRQ in IRQBALANCE_ARGS, or a
   `--policyscript` that answers `ban=true` for the NIC's PCI function (IRQ numbers change
   with a driver reload; the device path does not);
3. with 2, IRQBALANCE_BANNED_CPULIST: keeps irqbalance from placing other devices' IRQs on
   the CPUs the NIC's queues now own. Alone it is no fix: irqbalance still moves the NIC's
   own IRQs (off a banned CPU, even).
"""
from __future__ import annotations

from profiler.analysis.irq_text import irq_list
from profiler.system.cpus import format_cpu_list
from profiler.system.irqbalance import IrqbalanceState

POLICYSCRIPT_PATH = "/usr/local/sbin/irqbalance-netprof-policy"


def policyscript(devices: tuple[str, ...]) -> str:
    """A --policyscript that bans every IRQ of these PCI functions (irqbalance calls it with
    the IRQ's sysfs device path and the IRQ number, and reads key=value lines back)."""
    patterns = "|".join(f"*/{device}" for device in sorted(set(devices)))
    return "\n".join([
        "#!/bin/sh",
        "# irqbalance --policyscript: $1 is the IRQ's device in sysfs, $2 the IRQ number.",
        "# netprof: leave the NIC queues' IRQs where the affinity plan put them.",
        f'case "$1" in {patterns}) echo ban=true ;; esac',
        "exit 0",
        "",
    ])


def irqbalance_note(state: IrqbalanceState, planned_irqs: tuple[int, ...], queue_irqs: tuple[int, ...],
                    nic_cpus: frozenset[int] = frozenset(), nic_devices: tuple[str, ...] = ()) -> str | None:
    """The note for a plan made while irqbalance runs; None when it does not run, or when it
    already bans every IRQ the plan relies on."""
    if not state.running:
        return None
    pid = f" (pid {state.pid})" if state.pid else ""
    every = f"every {state.interval_s} s"
    relied_on = planned_irqs or queue_irqs
    exposed = tuple(irq for irq in relied_on if not state.leaves_alone(irq))
    if relied_on and not exposed:
        return (f"irqbalance is running{pid} and bans {irq_list(relied_on)} (--banirq): it leaves "
                "them where the plan puts them.")
    if planned_irqs:
        lead = (f"irqbalance is running{pid}: it re-places IRQs {every}, so it will undo this plan's "
                f"manual affinity for {irq_list(exposed)} at its next pass.")
    else:
        # Nothing to move now, possibly because irqbalance put the queues there; but what it
        # placed it may move again (it packs IRQs together when the load is low).
        lead = (f"irqbalance is running{pid}: it re-places IRQs {every}, so where the queue IRQs are "
                "now is its choice and may change at any pass. To pin them for good:")
    banned = exposed or relied_on
    banirq = " ".join(f"--banirq={irq}" for irq in sorted(set(banned) | state.banned_irqs)) or "--banirq=<irq> ..."
    parts = [
        lead,
        "Either stop it (systemctl stop irqbalance && systemctl disable irqbalance), which leaves "
        "every other device's IRQs where they are now;",
        f"or keep it and ban {irq_list(banned) if banned else 'the queue IRQs'} from it: "
        f"IRQBALANCE_ARGS=\"{banirq}\" in /etc/default/irqbalance (Debian, Ubuntu) or "
        "/etc/sysconfig/irqbalance (RHEL, SUSE), then systemctl restart irqbalance",
    ]
    if nic_devices:
        parts[-1] += (f"; IRQ numbers change when the driver reloads, a --policyscript does not: "
                      f"{POLICYSCRIPT_PATH} printing ban=true for the NIC's PCI function "
                      f"({', '.join(sorted(set(nic_devices)))}), then --policyscript={POLICYSCRIPT_PATH}")
    if state.policyscript:
        parts[-1] += (f" (a policyscript, {state.policyscript}, is already set: the IRQs it bans are left "
                      "alone; netprof cannot tell which without running it)")
    parts[-1] += "."
    if nic_cpus:
        kept_off = nic_cpus - state.all_banned_cpus
        already = (f" It bans CPUs {format_cpu_list(state.all_banned_cpus)} now"
                   f"{' (isolated/nohz_full included)' if state.kernel_banned_cpus else ''}."
                   if state.all_banned_cpus else "")
        if kept_off:
            parts.append(
                f"With the ban, IRQBALANCE_BANNED_CPULIST={format_cpu_list(nic_cpus | state.banned_cpus)} keeps "
                "other devices' IRQs off the CPUs the NIC queues now own; on its own it does not stop "
                f"irqbalance moving the NIC's own IRQs.{already}")
    parts.append("The script refuses to run while irqbalance runs unless FORCE=1.")
    return " ".join(parts)
