"""Every lab scenario by name, for `netprof lab run` and the demo.

Scenario modules import the `Scenario` base from scenarios.py, so the list lives here rather
than there (importing them from scenarios.py would be circular)."""
from __future__ import annotations

from .scenario_conntrack import SCENARIOS as CONNTRACK_SCENARIOS
from .scenario_cpu import NetRxOneCpuScenario
from .scenario_drops import CpuBacklogScenario, RcvbufDropScenario
from .scenario_listen import LISTEN_SCENARIOS
from .scenarios import SCENARIOS as BASE_SCENARIOS
from .scenarios import Scenario

SCENARIOS: dict[str, type[Scenario]] = {
    **BASE_SCENARIOS,
    NetRxOneCpuScenario.name: NetRxOneCpuScenario,
    RcvbufDropScenario.name: RcvbufDropScenario,
    CpuBacklogScenario.name: CpuBacklogScenario,
    **LISTEN_SCENARIOS,
    **CONNTRACK_SCENARIOS,
}
