import math
import shutil
import subprocess
from pathlib import Path

import pytest

from profiler.analysis.irq_plan import IrqPlan, plan_irq_affinity, spread_channels
from profiler.system.irqs import IrqTopology, Nic, NicQueue, irqbalance_running, read_irq_topology

NODES = Path(__file__).resolve().parent.parent / "fixtures" / "nodes"
MLX5_NODE0_CPUS = [*range(0, 8), *range(16, 24)]  # ABOUT.md: NUMA node 0 = CPUs 0-7,16-23


def plan_for(name: str, root: Path | None = None, **kwargs) -> IrqPlan:
    root = root or NODES / name
    kwargs.setdefault("irqbalance_running", irqbalance_running(root))
    return plan_irq_affinity(read_irq_topology(root), root=root, **kwargs)


def final_cpu_by_queue(name: str, plan: IrqPlan, nic: str) -> dict[int, frozenset[int]]:
    """Where each queue IRQ of `nic` runs once the plan is applied."""
    topology = read_irq_topology(NODES / name)
    moved = {move.irq: frozenset({move.to_cpu}) for move in plan.moves}
    return {q.index: moved.get(q.irq, q.irq_cpus) for q in topology.nic(nic).queues if q.irq is not None}


def copy_node(name: str, tmp_path: Path) -> Path:
    root = tmp_path / name
    shutil.copytree(NODES / name, root, symlinks=True)
    return root


def run_script(plan: IrqPlan, root: Path, tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    script = tmp_path / "plan.sh"
    script.write_text(plan.script(root=root))
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, timeout=30,
                          env={"PATH": "/usr/bin:/bin", **env})


# ---------------------------------------------------------------- mlx5: 32 queues piled on CPU 0


def test_mlx5_piled_queues_are_spread_over_node0_cpus():
    plan = plan_for("mlx5-32q-piled")
    placement = final_cpu_by_queue("mlx5-32q-piled", plan, "ens1f0")
    assert len(placement) == 32
    per_cpu: dict[int, int] = {}
    for cpus in placement.values():
        assert len(cpus) == 1
        (cpu,) = cpus
        per_cpu[cpu] = per_cpu.get(cpu, 0) + 1
    # Every node-0 CPU serves queues, none of node 1 does, and none serves more than its share.
    assert sorted(per_cpu) == MLX5_NODE0_CPUS
    assert max(per_cpu.values()) <= math.ceil(32 / 16)
    # Round-robin in CPU order: queue i on the i-th local CPU, like mlx5's own XPS map.
    assert placement == {i: frozenset({MLX5_NODE0_CPUS[i % 16]}) for i in range(32)}


def test_mlx5_moves_every_queue_not_already_in_its_place():
    plan = plan_for("mlx5-32q-piled")
    # Queues 0 and 16 land on CPU 0, where all 32 are now: no write for them.
    assert len(plan.moves) == 30
    assert {move.queue_index for move in plan.moves} == set(range(32)) - {0, 16}
    assert all(move.from_cpus == {0} for move in plan.moves)
    assert all(move.to_cpu in MLX5_NODE0_CPUS for move in plan.moves)
    assert len({move.irq for move in plan.moves}) == 30
    assert not plan.rps and not plan.xps
    assert not plan.irqbalance_running
    move = next(m for m in plan.moves if m.queue_index == 3)
    assert (move.irq, move.to_cpu, move.numa_node) == (101, 3, 0)
    assert "shared with 31 other ens1f0 queues" in move.reason
    assert "NUMA node 0" in move.reason
    assert "CPU 0 took 100%" in move.reason


def test_mlx5_commands_name_queue_irq_and_cpu():
    plan = plan_for("mlx5-32q-piled")
    commands = plan.commands()
    assert len(commands) == 30
    assert "echo 3 > /proc/irq/101/smp_affinity_list  # ens1f0 queue 3 (IRQ 101): CPU 0 → CPU 3 (NUMA node 0)" in commands
    assert "echo 16 > /proc/irq/122/smp_affinity_list  # ens1f0 queue 24 (IRQ 122): CPU 0 → CPU 16 (NUMA node 0)" in commands


def test_more_queues_than_cpus_is_noted_with_the_channel_count_fix():
    plan = plan_for("mlx5-32q-piled")
    assert any("ethtool -L ens1f0 combined 16" in note for note in plan.notes)


def test_net_rx_share_is_quoted_as_evidence():
    share = {0: 0.85, **{cpu: 0.015 for cpu in range(1, 32)}}
    plan = plan_for("mlx5-32q-piled", net_rx_share_by_cpu=share)
    assert all("CPU 0 spent 85% of its time in NET_RX while CPUs 1-7,16-23 spent at most 2%" in m.reason
               for m in plan.moves)


def test_housekeeping_cpus_are_avoided():
    plan = plan_for("mlx5-32q-piled", housekeeping_cpus=frozenset({0, 16}))
    placement = final_cpu_by_queue("mlx5-32q-piled", plan, "ens1f0")
    used = [cpu for cpus in placement.values() for cpu in cpus]
    assert 0 not in used and 16 not in used
    assert set(used) == set(MLX5_NODE0_CPUS) - {0, 16}
    assert max(used.count(cpu) for cpu in set(used)) <= math.ceil(32 / 14)
    assert len(plan.moves) == 32
    assert any("a housekeeping CPU" in m.reason for m in plan.moves)


def test_only_housekeeping_cpus_left_falls_back_with_a_note():
    plan = plan_for("ena-4q", housekeeping_cpus=frozenset({0, 1, 2, 3}))
    assert not plan.moves
    assert sum("every CPU" in note and "housekeeping" in note for note in plan.notes) == 2


# ---------------------------------------------------------------- already spread, irqbalance


def test_ixgbe_already_spread_needs_no_change_but_notes_irqbalance():
    plan = plan_for("ixgbe-8q-spread")
    assert plan.irqbalance_running
    assert not plan.moves and not plan.rps and not plan.xps
    assert plan.to_fix({"cpu": 0}) is None
    note = next(note for note in plan.notes if note.startswith("irqbalance is running"))
    assert "systemctl stop irqbalance && systemctl disable irqbalance" in note
    assert "--banirq=35" in note and "--banirq=42" in note
    assert "/etc/default/irqbalance" in note and "/etc/sysconfig/irqbalance" in note
    assert "IRQBALANCE_BANNED_CPULIST" in note
    # eth1 is down: queues and no vectors, said so rather than skipped silently.
    assert any(note.startswith("eth1 has 8 rx queues but no queue IRQs") for note in plan.notes)


def test_ena_two_nics_each_spread_on_the_same_cpus_is_no_change():
    plan = plan_for("ena-4q")
    assert not plan.moves and not plan.rps and not plan.notes


def test_irqbalance_running_puts_a_warning_first_in_the_commands():
    plan = plan_for("mlx5-32q-piled", irqbalance_running=True)
    assert plan.commands()[0].startswith("# irqbalance is running")
    assert any("--banirq=99" in note for note in plan.notes)


# ---------------------------------------------------------------- single queue: RPS


def test_virtio_single_queue_gets_rps_not_moves():
    plan = plan_for("virtio-1q")
    assert not plan.moves and not plan.xps
    (rps,) = plan.rps
    assert (rps.nic, rps.queue_index, rps.kind) == ("eth0", 0, "rps")
    assert rps.path == "/sys/class/net/eth0/queues/rx-0/rps_cpus"
    assert rps.from_cpus == frozenset() and rps.to_cpus == {0, 1}
    assert (rps.value, rps.current_text) == ("3", "0")
    assert "one rx queue" in rps.reason and "including CPU 1" in rps.reason
    assert plan.commands() == ("echo 3 > /sys/class/net/eth0/queues/rx-0/rps_cpus  # eth0 rx-0: RPS off → CPUs 0-1",)


def test_rps_leaves_out_an_interrupting_cpu_saturated_in_net_rx():
    plan = plan_for("virtio-1q", net_rx_share_by_cpu={0: 0.02, 1: 0.85})
    (rps,) = plan.rps
    assert rps.to_cpus == {0} and rps.value == "1"
    assert "leaving out CPU 1" in rps.reason
    assert "CPU 1 spent 85% of its time in NET_RX while CPU 0 spent at most 2%" in rps.reason


def test_single_queue_irq_on_a_housekeeping_cpu_moves_and_rps_has_nowhere_to_go():
    plan = plan_for("virtio-1q", housekeeping_cpus=frozenset({1}))
    (move,) = plan.moves
    assert (move.irq, move.kind, move.from_cpus, move.to_cpu) == (38, "rx", {1}, 0)
    assert not plan.rps
    assert any("RPS cannot help" in note for note in plan.notes)


# ---------------------------------------------------------------- changes(), script(), to_fix()


@pytest.mark.parametrize("name", ["mlx5-32q-piled", "virtio-1q", "hostile"])
def test_changes_point_at_the_files_and_expect_their_content(name):
    root = NODES / name
    plan = plan_for(name)
    changes = plan.changes(root=root)
    assert len(changes) == len(plan.moves) + len(plan.rps) + len(plan.xps) > 0
    for change, planned in zip(changes, [*plan.moves, *plan.rps, *plan.xps]):
        assert change.kind == "file" and change.netns is None
        assert change.key == str(root / planned.path.lstrip("/"))
        assert change.expected_current == Path(change.key).read_text().strip()
        assert change.value == planned.value
    # By default the keys are the node's own absolute paths, as `netprof fix --apply` takes them.
    node_keys = [change.key for change in plan.changes()]
    assert node_keys == [planned.path for planned in [*plan.moves, *plan.rps, *plan.xps]]


def test_mlx5_change_values():
    changes = {c.key: c for c in plan_for("mlx5-32q-piled").changes()}
    change = changes["/proc/irq/101/smp_affinity_list"]
    assert (change.value, change.expected_current) == ("3", "0")


@pytest.mark.parametrize("name", ["mlx5-32q-piled", "ixgbe-8q-spread", "ena-4q", "virtio-1q", "hostile"])
def test_script_is_valid_bash(name, tmp_path):
    plan = plan_for(name)
    for root in (None, NODES / name):
        script = tmp_path / "plan.sh"
        script.write_text(plan.script(root=root))
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        assert plan.script(root=root).startswith("#!/bin/bash\n")
        assert "set -eu" in plan.script(root=root)


def test_script_applies_the_plan_and_is_idempotent(tmp_path):
    root = copy_node("virtio-1q", tmp_path)
    plan = plan_for("virtio-1q", root=root)
    rps_file = root / "sys/class/net/eth0/queues/rx-0/rps_cpus"
    first = run_script(plan, root, tmp_path)
    assert first.returncode == 0, first.stderr
    assert rps_file.read_text() == "3\n"
    again = run_script(plan, root, tmp_path)
    assert again.returncode == 0, again.stderr


def test_script_skips_a_file_that_changed_since_planning(tmp_path):
    root = copy_node("mlx5-32q-piled", tmp_path)
    plan = plan_for("mlx5-32q-piled", root=root)
    changed = root / "proc/irq/101/smp_affinity_list"
    changed.write_text("9\n")
    result = run_script(plan, root, tmp_path)
    assert result.returncode == 1
    assert "holds '9', not '0' as planned" in result.stderr
    assert "1 of 30 writes skipped or failed" in result.stderr
    assert changed.read_text() == "9\n"
    assert (root / "proc/irq/102/smp_affinity_list").read_text() == "4\n"


def test_script_refuses_while_irqbalance_runs_unless_forced(tmp_path):
    root = copy_node("mlx5-32q-piled", tmp_path)
    plan = plan_for("mlx5-32q-piled", root=root)
    (root / "proc/4242").mkdir()
    (root / "proc/4242/comm").write_text("irqbalance\n")
    target = root / "proc/irq/101/smp_affinity_list"
    refused = run_script(plan, root, tmp_path)
    assert refused.returncode == 1
    assert "irqbalance is running" in refused.stderr
    assert target.read_text() == "0\n"
    forced = run_script(plan, root, tmp_path, FORCE="1")
    assert forced.returncode == 0, forced.stderr
    assert target.read_text() == "3\n"


def test_to_fix_carries_commands_changes_script_and_evidence():
    plan = plan_for("mlx5-32q-piled", irqbalance_running=True)
    fix = plan.to_fix({"net_rx_share": {0: 0.85, 1: 0.01}, "time_squeeze_per_s": 120.0})
    assert fix is not None
    assert fix.scope == "node"
    assert "ens1f0" in fix.title and "0-7,16-23" in fix.title
    assert fix.commands == plan.commands()
    assert fix.changes == plan.changes()
    assert fix.snippet == plan.script()
    assert "Evidence: net_rx_share: {0=0.85, 1=0.01}; time_squeeze_per_s: 120" in fix.rationale
    assert "irqbalance is running" in fix.rationale
    assert "reboot" in fix.persistence and "DaemonSet" in fix.persistence
    fix.to_json()


# ---------------------------------------------------------------- hostile and synthetic trees


def test_hostile_tree_plans_without_crashing_or_reading_outside_it():
    plan = plan_for("hostile")
    assert {move.irq for move in plan.moves} <= {30, 31, 32, 33, 34}
    # IRQ 33's affinity file links out of the root (to /etc/passwd): never planned on.
    assert 33 not in {move.irq for move in plan.moves}
    assert any("IRQ 33" in note and "cannot be read" in note for note in plan.notes)
    for command in plan.commands():
        assert "\n" not in command
    assert "passwd" not in plan.script()


def test_hostile_interface_names_cannot_break_out_of_a_comment(tmp_path):
    name = "e$(id)`x`;\x1b[2J"
    queue = NicQueue(name, 0, "combined", 50, frozenset({0}), frozenset({0}), (10, 0), None, None)
    other = NicQueue(name, 1, "combined", 51, frozenset({0}), frozenset({0}), (10, 0), None, None)
    topology = IrqTopology(frozenset({0, 1}), (Nic(name, None, None, (queue, other), 2, 2),), ())
    for irq in (50, 51):
        (tmp_path / f"proc/irq/{irq}").mkdir(parents=True)
        (tmp_path / f"proc/irq/{irq}/smp_affinity_list").write_text("0\n")
    plan = plan_irq_affinity(topology, irqbalance_running=False, root=tmp_path)
    (move,) = plan.moves
    assert move.to_cpu == 1
    (command,) = plan.commands()
    assert command.startswith("echo 1 > /proc/irq/51/smp_affinity_list  # ")
    assert "\x1b" not in command
    script = tmp_path / "plan.sh"
    script.write_text(plan.script())
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0


def _synthetic_root(tmp_path: Path, affinity_by_irq: dict[int, str], masks: dict[str, str] = {}) -> Path:
    for irq, text in affinity_by_irq.items():
        (tmp_path / f"proc/irq/{irq}").mkdir(parents=True)
        (tmp_path / f"proc/irq/{irq}/smp_affinity_list").write_text(text + "\n")
    for path, text in masks.items():
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / path).write_text(text + "\n")
    return tmp_path


def test_split_rx_and_tx_vectors_of_one_queue_move_together_off_the_remote_node(tmp_path):
    def vector(index, kind, irq, cpu):
        return NicQueue("eth2", index, kind, irq, frozenset({cpu}), frozenset({cpu}), (), None, None)

    # Queue 0 is fine on CPU 0; queue 1's rx and tx vectors sit on CPU 5, on the other node.
    queues = (vector(0, "rx", 60, 0), vector(0, "tx", 61, 0), vector(1, "rx", 62, 5), vector(1, "tx", 63, 5))
    nic = Nic("eth2", "igb", 0, queues, 2, 2, "0000:01:00.0", frozenset({0, 1, 2, 3}))
    root = _synthetic_root(tmp_path, {60: "0", 61: "0", 62: "5", 63: "5"})
    plan = plan_irq_affinity(IrqTopology(frozenset(range(8)), (nic,), ()), irqbalance_running=False, root=root)
    assert [(m.irq, m.kind, m.to_cpu) for m in plan.moves] == [(62, "rx", 1), (63, "tx", 1)]
    assert "off eth2's NUMA node 0 (CPUs 0-3)" in plan.moves[0].reason
    assert plan.commands()[0].endswith("# eth2 queue 1 rx (IRQ 62): CPU 5 → CPU 1 (NUMA node 0)")


def test_single_rx_queue_with_several_tx_queues_gets_xps(tmp_path):
    base = "sys/class/net/eth3/queues"
    queues = (
        NicQueue("eth3", 0, "rx", 70, frozenset({0, 1, 2, 3}), frozenset({2}), (), frozenset(), None),
        NicQueue("eth3", 0, "tx", 71, frozenset({0}), frozenset({0}), (), None, frozenset()),
        NicQueue("eth3", 1, "tx", 72, frozenset({1}), frozenset({1}), (), None, frozenset()),
    )
    nic = Nic("eth3", "virtio_net", None, queues, 1, 2, "virtio7", frozenset({0, 1, 2, 3}))
    root = _synthetic_root(tmp_path, {70: "0-3", 71: "0", 72: "1"},
                           {f"{base}/rx-0/rps_cpus": "0", f"{base}/tx-0/xps_cpus": "0", f"{base}/tx-1/xps_cpus": "0"})
    plan = plan_irq_affinity(IrqTopology(frozenset(range(4)), (nic,), ()), irqbalance_running=False, root=root)
    assert not plan.moves
    assert [(s.queue_index, s.to_cpus, s.value) for s in plan.rps] == [(0, {0, 1, 2, 3}, "f")]
    assert [(s.queue_index, s.to_cpus, s.value) for s in plan.xps] == [(0, {0, 2}, "5"), (1, {1, 3}, "a")]
    assert plan.xps[0].path == "/sys/class/net/eth3/queues/tx-0/xps_cpus"
    for change in plan.changes(root=root):
        assert Path(change.key).read_text().strip() == change.expected_current


# ---------------------------------------------------------------- the spreading rule itself


def test_spread_keeps_queues_alone_on_their_cpu():
    assert spread_channels([frozenset({3}), frozenset({1}), frozenset({2})], [1, 2, 3]) == [3, 1, 2]


def test_spread_balances_to_within_one_queue():
    targets = spread_channels([frozenset({0})] * 20, list(range(16)))
    counts = [targets.count(cpu) for cpu in range(16)]
    assert max(counts) == 2 and min(counts) == 1 and counts.count(2) == 4


def test_spread_moves_only_what_is_crowded():
    # Queues 0-2 alone on CPUs 0-2; queues 3 and 4 share CPU 3; CPU 4 is free.
    current = [frozenset({0}), frozenset({1}), frozenset({2}), frozenset({3}), frozenset({3})]
    assert spread_channels(current, [0, 1, 2, 3, 4]) == [0, 1, 2, 3, 4]
    # The crowded pair, reversed: the round-robin slot decides who stays.
    current = [frozenset({3}), frozenset({3}), frozenset({0}), frozenset({1}), frozenset({2})]
    targets = spread_channels(current, [0, 1, 2, 3, 4])
    assert sorted(targets) == [0, 1, 2, 3, 4] and targets[2:] == [0, 1, 2]


def test_rps_only_plan_does_not_wait_for_irqbalance(tmp_path):
    root = copy_node("virtio-1q", tmp_path)
    (root / "proc/4242").mkdir()
    (root / "proc/4242/comm").write_text("irqbalance\n")
    plan = plan_for("virtio-1q", root=root)
    assert plan.irqbalance_running
    assert not plan.commands()[0].startswith("#")
    result = run_script(plan, root, tmp_path)
    assert result.returncode == 0, result.stderr
    assert (root / "sys/class/net/eth0/queues/rx-0/rps_cpus").read_text() == "3\n"


def test_a_pending_affinity_write_is_where_the_irq_will_land(tmp_path):
    """Issue 19: a TX vector that has not fired since its smp_affinity was written keeps its
    old effective CPU. The planner believed it already sat where the plan wanted it, moved
    only the RX vector and split the channel. An effective CPU outside smp_affinity is a
    pending move: plan from smp_affinity, and a channel's RX and TX move together."""
    def vector(index, kind, irq, affinity, effective):
        return NicQueue("eth0", index, kind, irq, frozenset(affinity), frozenset(effective), (), None, None)

    queues = (vector(0, "rx", 80, {0}, {0}), vector(0, "tx", 81, {0}, {0}),
              vector(1, "rx", 82, {0}, {0}), vector(1, "tx", 83, {0}, {1}))   # 83: written to 0, not fired since
    assert queues[3].irq_cpus == frozenset({0})
    nic = Nic("eth0", "virtio_net", None, queues, 2, 2, "virtio0", frozenset({0, 1, 2, 3}))
    root = _synthetic_root(tmp_path, {80: "0", 81: "0", 82: "0", 83: "0"})
    plan = plan_irq_affinity(IrqTopology(frozenset(range(4)), (nic,), ()), irqbalance_running=False, root=root)
    moved = {m.irq: m.to_cpu for m in plan.moves}
    assert 82 in moved and 83 in moved and moved[82] == moved[83] != 0, plan.moves
    assert [m for m in plan.moves if m.irq == 83][0].from_cpus == frozenset({0})
