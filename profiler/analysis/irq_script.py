"""The IRQ affinity plan rendered as a bash script (`IrqPlan.script`), beside the plan's other
renderings (shell commands, `Change`s, a `Fix`) and the sysctl fixes' commands in fixes.py.

The script is built from plain data (the plan's writes, notes and planned IRQs), so it knows
nothing of how the plan was made.
"""
from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

from profiler.analysis.irq_text import IRQBALANCE_INTERVAL_S, comment_block, irq_list


def render_irq_script(
    writes: Sequence[tuple[str, str, str, str]],
    *,
    notes: Sequence[str],
    persistence: str,
    has_affinity_writes: bool,
    planned_irqs: tuple[int, ...],
    root: Path | None = None,
) -> str:
    """A bash script applying `writes` ((absolute path, value, what was read, comment) each).
    When it has IRQ affinity to write it refuses to run while irqbalance runs (unless FORCE=1);
    it skips any file that no longer holds what the plan saw, and exits non-zero if any write
    was skipped or failed.

    root: prefix for every path the script touches, for a host filesystem mounted
    elsewhere (a container with the host's /proc and /sys under /host) or a test tree.
    """
    prefix = "" if root is None or Path(root) == Path("/") else str(Path(root)).rstrip("/")
    out = [
        "#!/bin/bash",
        "# netprof IRQ affinity plan: queue IRQ affinity and RPS/XPS masks.",
        "# Each write checks that the file still holds what netprof read when it planned;",
        "# a file that changed since is skipped (re-run netprof for a fresh plan).",
        "# Run as root. Re-running is harmless: a file already holding its value is left alone.",
    ]
    for note in notes:
        out.append("#")
        out.extend(comment_block(note))
    out.append("#")
    out.extend(comment_block(persistence))
    out += ["set -eu", ""]
    if not has_affinity_writes:
        out.append("# No IRQ affinity writes: irqbalance, if it runs, leaves RPS/XPS masks alone.")
    else:
        out += _irqbalance_guard(prefix, planned_irqs)
    out += [
        "failures=0",
        "# write_planned FILE SEEN VALUE: write VALUE unless FILE no longer holds SEEN.",
        "write_planned() {",
        "    local file=$1 seen=$2 value=$3 current",
        '    if ! current=$(cat -- "$file" 2>/dev/null); then',
        '        echo "netprof: cannot read $file; skipped" >&2',
        "        failures=$((failures + 1))",
        "        return 0",
        "    fi",
        '    [ "$current" = "$value" ] && return 0',
        '    if [ "$current" != "$seen" ]; then',
        '        echo "netprof: $file holds \'$current\', not \'$seen\' as planned; skipped" >&2',
        "        failures=$((failures + 1))",
        "        return 0",
        "    fi",
        "    # A kernel-managed IRQ (pci_alloc_irq_vectors_affinity) refuses new affinity with EIO.",
        '    if ! { printf \'%s\\n\' "$value" > "$file"; } 2>/dev/null; then',
        '        echo "netprof: writing $value to $file failed; skipped" >&2',
        "        failures=$((failures + 1))",
        "    fi",
        "}",
        "",
    ]
    if not writes:
        out.append("# Nothing to change.")
    for path, value, current, comment in writes:
        out.append(
            f"write_planned {shlex.quote(prefix + path)} {shlex.quote(current)} {shlex.quote(value)}  # {comment}"
        )
    plural = "write" if len(writes) == 1 else "writes"
    out += [
        "",
        'if [ "$failures" -gt 0 ]; then',
        f'    echo "netprof: $failures of {len(writes)} {plural} skipped or failed" >&2',
        "    exit 1",
        "fi",
        f'echo "netprof: IRQ affinity plan applied ({len(writes)} {plural})"',
        "",
    ]
    return "\n".join(out)


def _irqbalance_guard(prefix: str, planned_irqs: tuple[int, ...]) -> list[str]:
    irqs = irq_list(planned_irqs)
    return [
        f"# irqbalance re-places IRQs every {IRQBALANCE_INTERVAL_S} s: writing under it is undone at its next pass.",
        "irqbalance_running() {",
        "    local comm name",
        f"    for comm in {shlex.quote(prefix + '/proc/')}[0-9]*/comm; do",
        '        { read -r name < "$comm"; } 2>/dev/null || continue',
        '        [ "$name" = irqbalance ] && return 0',
        "    done",
        "    return 1",
        "}",
        "if irqbalance_running; then",
        '    if [ "${FORCE:-0}" != 1 ]; then',
        f'        echo "netprof: irqbalance is running and would undo this plan. Stop it'
        f' (systemctl stop irqbalance && systemctl disable irqbalance) or ban {irqs}'
        f' (--banirq in IRQBALANCE_ARGS), then run again; FORCE=1 writes anyway." >&2',
        "        exit 1",
        "    fi",
        '    echo "netprof: irqbalance is running; FORCE=1, writing anyway (it may move them back)" >&2',
        "fi",
        "",
    ]
