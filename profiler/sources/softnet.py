"""Per-CPU packet-processing counters from /proc/net/softnet_stat: no BPF needed, so this is
also the fallback view of NET_RX load where the softirq and NAPI probes cannot attach."""
from __future__ import annotations

from pathlib import Path
from types import MappingProxyType

from ..kernel.loader import BpfLoader
from ..probes.base import ProbeStatus
from ..snapshot import SnapshotFrame
from ..system.softnet import SoftnetCpu, SoftnetDelta, read_softnet, softnet_deltas

VIA = "procfs:/proc/net/softnet_stat"
COUNTERS = ("processed", "dropped", "time_squeeze", "received_rps", "flow_limit_count")


def softnet_counters(delta: SoftnetDelta) -> dict[str, int]:
    """The counters that moved; a column this kernel does not print is left out."""
    values = {name: getattr(delta, name) for name in COUNTERS}
    return {name: value for name, value in values.items() if value}


class SoftnetSource:
    name = "softnet"

    def __init__(self, root: Path = Path("/")):
        self.root = root
        self._previous: tuple[SoftnetCpu, ...] = ()

    def attach(self, loader: BpfLoader | None = None) -> list[ProbeStatus]:
        self._previous = read_softnet(self.root)
        if not self._previous:
            return [ProbeStatus(self.name, False, VIA,
                                f"cannot read {self.root / 'proc/net/softnet_stat'}")]
        return [ProbeStatus(self.name, True, VIA)]

    def collect(self, frame: SnapshotFrame) -> None:
        if not self._previous:
            return
        current = read_softnet(self.root)
        if not current:
            return
        previous, self._previous = self._previous, current
        for cpu, delta in softnet_deltas(previous, current).items():
            counters = softnet_counters(delta)
            if counters:
                frame.cpu(cpu, softnet=MappingProxyType(counters))

    def detach(self) -> None:
        self._previous = ()
