"""Conntrack insert failures per pod, counted where they happen (bpf/conntrack_confirm.bpf.c:
kprobe + kretprobe on __nf_conntrack_confirm, NF_DROP returns).

Beside, not instead of, the per-netns conntrack statistics (profiler/sources/conntrack.py):
those are exact but read by entering every pod's netns; this probe needs no netns visit and
marks the confirm step, which no tracepoint does. Attached only where kprobes exist and
nf_conntrack is loaded.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import NetprofError
from ..kernel.loader import BpfLoader
from ..kernel.maps import MapLayout, MapReader
from .base import ProbeStatus
from .kprobe_attach import release_and_report, why_not_kprobe

NAME = "conntrack_confirm"
SYMBOL = "__nf_conntrack_confirm"
# kprobe and kretprobe on the same function; the probe table names the method.
VIA = f"kprobe:{SYMBOL}"
MAX_NETNS = 4096

# Mirrors struct confirm_key / struct confirm_count in bpf/conntrack_confirm.h.
CONFIRM_KEY = np.dtype([("netns", "<u4")])
CONFIRM_COUNT = np.dtype([("failed", "<u8"), ("confirmed", "<u8")])


@dataclass(frozen=True)
class ConfirmCounts:
    """Cumulative confirm outcomes since attach, one row per netns."""

    keys: np.ndarray     # CONFIRM_KEY
    counts: np.ndarray   # CONFIRM_COUNT, aligned with keys

    def failed_by_netns(self) -> dict[int, int]:
        return {int(k["netns"]): int(c["failed"]) for k, c in zip(self.keys, self.counts)}


class ConntrackConfirmProbe:
    name = NAME

    def __init__(self, root: Path = Path("/")) -> None:
        self.root = root
        self._bpf = None
        self._counts: MapReader | None = None

    def attach(self, loader: BpfLoader) -> ProbeStatus:
        why_not = why_not_kprobe(loader.info, SYMBOL, self.root, " (nf_conntrack not loaded)")
        if why_not:
            return ProbeStatus(NAME, False, VIA, why_not)
        try:
            self._bpf = loader.compile("conntrack_confirm", [f"-DNETPROF_MAX_NETNS={MAX_NETNS}"])
            self._bpf.attach_kprobe(event=SYMBOL.encode(), fn_name=b"confirm_entry")
            self._bpf.attach_kretprobe(event=SYMBOL.encode(), fn_name=b"confirm_return")
        except NetprofError as exc:
            self.detach()
            return ProbeStatus(NAME, False, VIA, str(exc))
        except Exception as exc:  # BCC raises bare Exception when an attach fails
            self.detach()
            return ProbeStatus(NAME, False, VIA, f"attaching to {SYMBOL} failed: {exc}")
        self._counts = MapReader(self._bpf[b"confirms_by_netns"], MapLayout(CONFIRM_KEY, CONFIRM_COUNT))
        return ProbeStatus(NAME, True, VIA)

    @property
    def attached(self) -> bool:
        return self._counts is not None

    def read(self) -> ConfirmCounts:
        if self._counts is None:
            raise RuntimeError("read() before a successful attach()")
        keys, counts = self._counts.read()
        return ConfirmCounts(keys, counts)

    def detach(self) -> None:
        if self._bpf is not None:
            release_and_report(self._bpf, "conntrack_confirm")
            self._bpf.cleanup()
        self._bpf = None
        self._counts = None
