"""A duration `netprof lab run` accepts is one every workload of every scenario can run.

Servers and sinks are started for the run plus GRACE_S; before this was one number, a
workload capped at 600 s refused a 590 s run's 620 s sink after the lab was up."""
import argparse

import pytest

from profiler.lab import traffic, workload_cpu, workload_drops, workload_listen
from profiler.lab.commands import positive_seconds
from profiler.lab.workload_common import GRACE_S, MAX_RUN_S, MAX_WORKLOAD_S


@pytest.mark.parametrize("module", [traffic, workload_cpu, workload_drops, workload_listen])
def test_every_workload_runs_the_longest_run_plus_its_grace(module):
    assert module._duration(str(MAX_RUN_S + GRACE_S)) == MAX_RUN_S + GRACE_S
    with pytest.raises(argparse.ArgumentTypeError):
        module._duration(str(MAX_WORKLOAD_S + 1))


def test_conntrack_sink_takes_the_same_bound():
    from profiler.lab.workload_conntrack import _parser

    args = _parser().parse_args(["udp-sink", "--port", "5300", "--duration", str(MAX_RUN_S + GRACE_S)])
    assert args.duration == MAX_RUN_S + GRACE_S


def test_the_cli_accepts_exactly_what_the_workloads_can_run():
    assert positive_seconds(str(MAX_RUN_S)) == MAX_RUN_S
    for bad in (str(MAX_RUN_S + 1), "0", "-1", "nan"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive_seconds(bad)
