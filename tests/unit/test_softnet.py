import os
from pathlib import Path

import pytest

from profiler.system.softnet import SoftnetCpu, SoftnetDelta, parse_softnet_stat, read_softnet, softnet_deltas

NODES = Path(__file__).resolve().parent.parent / "fixtures" / "nodes"

ZERO5 = "00000000 " * 5


def line(*columns: int) -> str:
    return " ".join(f"{value:08x}" for value in columns)


def legacy(processed, dropped, squeeze, *tail) -> str:
    """processed, dropped, time_squeeze, five fastroute zeros, cpu_collision, then `tail`."""
    return line(processed, dropped, squeeze, 0, 0, 0, 0, 0, 0, *tail)


def test_ten_columns_before_flow_limit():
    # 2.6.35 .. 3.10: received_rps is the last column.
    cpus = parse_softnet_stat(legacy(100, 1, 2, 7) + "\n" + legacy(200, 0, 0, 0) + "\n")
    assert cpus == (
        SoftnetCpu(0, 100, 1, 2, received_rps=7, flow_limit_count=None, backlog_len=None),
        SoftnetCpu(1, 200, 0, 0, received_rps=0, flow_limit_count=None, backlog_len=None),
    )


def test_eleven_columns_add_flow_limit():
    (cpu,) = parse_softnet_stat(legacy(0x1000, 3, 4, 5, 6))
    assert (cpu.processed, cpu.dropped, cpu.time_squeeze) == (0x1000, 3, 4)
    assert (cpu.received_rps, cpu.flow_limit_count, cpu.backlog_len) == (5, 6, None)


def test_thirteen_columns_carry_backlog_and_cpu_number():
    # 5.10+: the CPU number is printed, so an offline CPU leaves a visible gap.
    text = "\n".join([legacy(10, 0, 0, 0, 0, 4, 0), legacy(20, 0, 0, 0, 0, 0, 2), legacy(30, 9, 0, 0, 0, 0, 3)])
    cpus = parse_softnet_stat(text)
    assert [cpu.cpu for cpu in cpus] == [0, 2, 3]
    assert cpus[0].backlog_len == 4
    assert cpus[2].dropped == 9
    assert cpus[0].input_qlen is None


def test_fifteen_columns_split_the_backlog():
    # 6.4+: input_pkt_queue and process_queue lengths after the CPU number.
    (cpu,) = parse_softnet_stat(legacy(1, 0, 0, 0, 0, 7, 5, 4, 3))
    assert (cpu.cpu, cpu.backlog_len, cpu.input_qlen, cpu.process_qlen) == (5, 7, 4, 3)


def test_old_kernels_are_placed_by_the_online_cpu_list():
    text = "\n".join([legacy(10, 0, 0, 0, 0), legacy(20, 0, 0, 0, 0), legacy(30, 0, 0, 0, 0)])
    assert [cpu.cpu for cpu in parse_softnet_stat(text, online_cpus=[3, 0, 2])] == [0, 2, 3]
    # A CPU came online between the two reads: the list does not fit, fall back to line order.
    assert [cpu.cpu for cpu in parse_softnet_stat(text, online_cpus=[0, 1, 2, 3])] == [0, 1, 2]
    assert [cpu.cpu for cpu in parse_softnet_stat(text)] == [0, 1, 2]


def test_the_cpu_column_wins_over_the_online_list():
    text = legacy(10, 0, 0, 0, 0, 0, 6)
    assert parse_softnet_stat(text, online_cpus=[1])[0].cpu == 6


@pytest.mark.parametrize(
    "junk",
    ["", "hello softnet", "0000zz 1 2 3 4 5 6 7 8 9 10", "00001000 00000001", "0x10 " + ZERO5 + "0 0 0 0",
     "+1 " + ZERO5 + "0 0 0 0", "\x00\x01"],
)
def test_junk_lines_are_skipped(junk):
    text = junk + "\n" + legacy(0x2000, 0, 1, 0, 0) + "\n"
    assert [(cpu.cpu, cpu.processed) for cpu in parse_softnet_stat(text)] == [(0, 0x2000)]


def test_deltas_per_cpu_wrap_and_missing_cpus():
    before = (
        SoftnetCpu(0, processed=100, dropped=1, time_squeeze=2, received_rps=0, flow_limit_count=0, backlog_len=0),
        SoftnetCpu(1, processed=0xFFFFFFF0, dropped=0, time_squeeze=0, received_rps=5, flow_limit_count=0,
                   backlog_len=0),
        SoftnetCpu(2, processed=1, dropped=0, time_squeeze=0, received_rps=0, flow_limit_count=0, backlog_len=0),
    )
    after = (
        SoftnetCpu(0, processed=350, dropped=4, time_squeeze=2, received_rps=0, flow_limit_count=1, backlog_len=12),
        # processed wrapped past 2**32.
        SoftnetCpu(1, processed=0x10, dropped=0, time_squeeze=3, received_rps=9, flow_limit_count=0, backlog_len=0),
        # CPU 3 came online in between: no interval for it.
        SoftnetCpu(3, processed=50, dropped=0, time_squeeze=0, received_rps=0, flow_limit_count=0, backlog_len=0),
    )
    deltas = softnet_deltas(before, after)
    assert deltas == {
        0: SoftnetDelta(0, processed=250, dropped=3, time_squeeze=0, received_rps=0, flow_limit_count=1,
                        backlog_len=12),
        1: SoftnetDelta(1, processed=0x20, dropped=0, time_squeeze=3, received_rps=4, flow_limit_count=0,
                        backlog_len=0),
    }


def test_deltas_keep_missing_columns_missing():
    before = parse_softnet_stat(legacy(10, 0, 0, 1))
    after = parse_softnet_stat(legacy(25, 0, 1, 3))
    assert softnet_deltas(before, after) == {
        0: SoftnetDelta(0, processed=15, dropped=0, time_squeeze=1, received_rps=2, flow_limit_count=None,
                        backlog_len=None)
    }


# ---------------------------------------------------------------- fixture trees and the live root


def test_mlx5_box_cpu0_drops_and_squeezes():
    cpus = read_softnet(NODES / "mlx5-32q-piled")
    assert [cpu.cpu for cpu in cpus] == list(range(32))
    assert cpus[0].dropped == 48_112 and cpus[0].time_squeeze == 1_207_331
    assert cpus[0].backlog_len == 1000 and cpus[0].input_qlen == 1000 and cpus[0].process_qlen == 0
    assert all(cpu.dropped == 0 for cpu in cpus[1:])


@pytest.mark.parametrize(
    "node, cpus, has_backlog, has_split_backlog",
    [
        ("ixgbe-8q-spread", list(range(8)), False, False),
        ("ena-4q", list(range(4)), True, False),
        ("virtio-1q", [0, 1], True, True),
    ],
)
def test_fixture_column_variants(node, cpus, has_backlog, has_split_backlog):
    read = read_softnet(NODES / node)
    assert [cpu.cpu for cpu in read] == cpus
    assert all((cpu.backlog_len is not None) == has_backlog for cpu in read)
    assert all((cpu.input_qlen is not None) == has_split_backlog for cpu in read)
    assert all(cpu.processed > 0 for cpu in read)


def test_hostile_tree_reads_through_proc_self_and_maps_the_offline_gap():
    # /proc/net -> self/net -> 4242/net inside the tree; 11 columns; CPU 1 offline; junk lines.
    cpus = read_softnet(NODES / "hostile")
    assert [(cpu.cpu, cpu.processed, cpu.dropped) for cpu in cpus] == [(0, 0x1000, 1), (2, 0x2000, 0), (3, 0x4000, 5)]
    assert cpus[2].flow_limit_count == 7


def test_missing_file_reads_as_nothing(tmp_path):
    assert read_softnet(tmp_path) == ()


def test_live_root():
    cpus = read_softnet(Path("/"))
    assert set(os.sched_getaffinity(0)) <= {cpu.cpu for cpu in cpus}
    later = read_softnet(Path("/"))
    deltas = softnet_deltas(cpus, later)
    assert set(deltas) == {cpu.cpu for cpu in cpus}
    # Counters only grow over a fraction of a second (far from a 32-bit wrap).
    assert all(delta.processed < 1 << 31 for delta in deltas.values())
