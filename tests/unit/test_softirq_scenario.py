"""The NET_RX scenario's pure parts: RPS mask syntax, sysfs paths, CPU choice."""
from __future__ import annotations

import pytest

from profiler.lab import LabError
from profiler.lab import scenario_cpu
from profiler.lab.scenario_cpu import choose_cpus, cpu_mask, rps_cpus_path


def test_cpu_mask_in_rps_cpus_syntax():
    assert cpu_mask({0}) == "1"
    assert cpu_mask({1}) == "2"
    assert cpu_mask({0, 3}) == "9"
    assert cpu_mask({32}) == "1,00000000"
    assert cpu_mask({65, 0}) == "2,00000000,00000001"
    assert cpu_mask(set()) == "0"


def test_rps_path_refuses_names_that_leave_sys_class_net():
    assert rps_cpus_path("v2-sender") == "/sys/class/net/v2-sender/queues/rx-0/rps_cpus"
    for bad in ("..", "../../etc", "eth0/../x", "", "a" * 16, "eth 0"):
        with pytest.raises(LabError):
            rps_cpus_path(bad)


def test_choose_cpus(monkeypatch):
    monkeypatch.setattr(scenario_cpu, "usable_cpus", lambda: [0, 1, 2, 3])
    assert choose_cpus(None, None) == (0, 1)
    assert choose_cpus(1, None) == (1, 0)
    assert choose_cpus(3, 2) == (3, 2)
    with pytest.raises(LabError, match="different"):
        choose_cpus(2, 2)
    with pytest.raises(LabError, match="not usable"):
        choose_cpus(7, None)


def test_one_cpu_is_refused_with_the_reason(monkeypatch):
    monkeypatch.setattr(scenario_cpu, "usable_cpus", lambda: [0])
    with pytest.raises(LabError, match="at least 2 CPUs"):
        choose_cpus(None, None)
    assert "at least 2 CPUs" in scenario_cpu.NetRxOneCpuScenario.missing()
