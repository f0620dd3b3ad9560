"""irqbalance as netprof reads it (profiler/system/irqbalance.py) and what the IRQ plan tells
the operator to do about it (profiler/analysis/irqbalance_plan.py). The guest test with
Debian's irqbalance running is tests/kernels/mq/test_irqbalance.py."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from profiler.analysis.irq_plan import plan_irq_affinity
from profiler.analysis.irqbalance_plan import irqbalance_note, policyscript
from profiler.system.irqbalance import (IrqbalanceState, banned_cpus_from, parse_cmdline, parse_config,
                                        read_irqbalance)
from profiler.system.irqs import read_irq_topology

NODES = Path(__file__).resolve().parent.parent / "fixtures" / "nodes"


@pytest.mark.parametrize("argv, banned, script, interval", [
    (["/usr/sbin/irqbalance", "--foreground"], set(), None, 10),
    (["irqbalance", "--banirq=42", "-i", "43", "-i44", "--policyscript=/p.sh", "-t", "5"], {42, 43, 44}, "/p.sh", 5),
    (["irqbalance", "--banirq", "7", "-l", "/etc/p", "--interval=2"], {7}, "/etc/p", 2),
    (["irqbalance", "--banirq=x", "-t", "0", "-i"], set(), None, 10),   # garbage bans nothing
])
def test_parse_cmdline(argv, banned, script, interval):
    found = parse_cmdline(argv)
    assert found["banned_irqs"] == frozenset(banned)
    assert found["policyscript"] == script and found["interval_s"] == interval


def test_banned_cpus_list_wins_over_the_old_mask():
    assert banned_cpus_from({"IRQBALANCE_BANNED_CPULIST": "2-3", "IRQBALANCE_BANNED_CPUS": "1"}) == {2, 3}
    assert banned_cpus_from({"IRQBALANCE_BANNED_CPUS": "00000005"}) == {0, 2}
    assert banned_cpus_from({"IRQBALANCE_BANNED_CPULIST": "not a list"}) == frozenset()


def test_debian_defaults_file():
    text = ('# Configuration for the irqbalance daemon\n#IRQBALANCE_ONESHOT=\n'
            'IRQBALANCE_BANNED_CPULIST="3"\nIRQBALANCE_ARGS="--banirq=50 --policyscript=/usr/local/sbin/p"\n')
    variables = parse_config(text)
    assert variables == {"IRQBALANCE_BANNED_CPULIST": "3",
                         "IRQBALANCE_ARGS": "--banirq=50 --policyscript=/usr/local/sbin/p"}


def _fake_proc(root: Path, pid: int, argv: list[str], environ: dict[str, str]) -> None:
    proc = root / "proc" / str(pid)
    proc.mkdir(parents=True)
    (proc / "comm").write_text("irqbalance\n")
    (proc / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (proc / "environ").write_bytes(b"\0".join(f"{k}={v}".encode() for k, v in environ.items()) + b"\0")


def test_running_process_is_read_from_its_own_cmdline_and_environ(tmp_path):
    _fake_proc(tmp_path, 812, ["/usr/sbin/irqbalance", "--foreground", "--banirq=31", "-l", "/p"],
               {"PATH": "/bin", "IRQBALANCE_BANNED_CPULIST": "3"})
    (tmp_path / "sys/devices/system/cpu").mkdir(parents=True)
    (tmp_path / "sys/devices/system/cpu/isolated").write_text("2\n")
    (tmp_path / "sys/devices/system/cpu/nohz_full").write_text("(null)\n")
    state = read_irqbalance(tmp_path)
    assert state.running and state.pid == 812 and state.settings_from == "process 812"
    assert state.banned_irqs == {31} and state.policyscript == "/p"
    assert state.banned_cpus == {3} and state.kernel_banned_cpus == {2} and state.all_banned_cpus == {2, 3}


def test_not_running_reads_the_config_file(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "etc/default").mkdir(parents=True)
    (tmp_path / "etc/default/irqbalance").write_text('IRQBALANCE_ARGS="-i 9"\nIRQBALANCE_BANNED_CPUS=2\n')
    state = read_irqbalance(tmp_path)
    assert not state.running and state.banned_irqs == {9} and state.banned_cpus == {1}
    assert state.settings_from == "/etc/default/irqbalance"
    assert read_irqbalance(tmp_path / "nothing") == IrqbalanceState(False)


def test_note_names_the_exposed_irqs_and_every_way_out():
    state = IrqbalanceState(True, pid=812, banned_irqs=frozenset({40}), interval_s=5, banned_cpus=frozenset({3}))
    note = irqbalance_note(state, (40, 41, 42), (40, 41, 42, 43), frozenset({0, 1, 2}), ("0000:3b:00.0",))
    assert note.startswith("irqbalance is running (pid 812): it re-places IRQs every 5 s, so it will undo "
                           "this plan's manual affinity for IRQs 41-42")
    assert "systemctl stop irqbalance && systemctl disable irqbalance" in note
    # Its existing ban is kept in the arguments it is told to use.
    assert 'IRQBALANCE_ARGS="--banirq=40 --banirq=41 --banirq=42"' in note
    assert "--policyscript=/usr/local/sbin/irqbalance-netprof-policy" in note and "0000:3b:00.0" in note
    assert "IRQBALANCE_BANNED_CPULIST=0-3" in note


def test_note_when_every_planned_irq_is_banned_already():
    state = IrqbalanceState(True, pid=9, banned_irqs=frozenset({40, 41}))
    note = irqbalance_note(state, (40, 41), (40, 41), frozenset({1, 2}))
    assert note == ("irqbalance is running (pid 9) and bans IRQs 40-41 (--banirq): it leaves them where "
                    "the plan puts them.")
    assert irqbalance_note(IrqbalanceState(False), (40,), (40,)) is None


def test_policyscript_bans_by_pci_function(tmp_path):
    import subprocess

    script = tmp_path / "policy"
    script.write_text(policyscript(("0000:3b:00.0",)))
    script.chmod(0o755)
    banned = subprocess.run([str(script), "/sys/devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0", "88"],
                            capture_output=True, text=True)
    other = subprocess.run([str(script), "/sys/devices/pci0000:00/0000:00:1f.2", "46"], capture_output=True, text=True)
    assert banned.stdout == "ban=true\n" and other.stdout == "" and other.returncode == 0


def test_plan_uses_the_state_it_is_given(tmp_path):
    root = tmp_path / "node"
    shutil.copytree(NODES / "mlx5-32q-piled", root, symlinks=True)
    topology = read_irq_topology(root)
    plain = plan_irq_affinity(topology, irqbalance_running=True, root=root)
    note = next(n for n in plain.notes if n.startswith("irqbalance is running"))
    assert "--banirq=" in note
    everything = frozenset(plain.planned_irqs)
    banned = plan_irq_affinity(topology, irqbalance_running=True, root=root,
                               irqbalance=IrqbalanceState(True, pid=5, banned_irqs=everything))
    assert any(n.endswith("it leaves them where the plan puts them.") for n in banned.notes)
