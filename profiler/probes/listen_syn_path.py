"""SYNs refused at a full SYN or accept queue, per (pod netns, listening port, cause)
(bpf/listen_syn_path.bpf.c: kprobe + kretprobe on tcp_conn_request).

Used only for what no tracepoint sees: a SYN refused for a full queue is freed with
consume_skb. The final-ACK path's overflows keep coming from skb:kfree_skb
(TCP_LISTEN_OVERFLOW, profiler/probes/drops.py). Kernels without kprobes (6.18 as built
here) report this probe not attached, with the reason, and keep the per-netns
ListenOverflows/TCPReqQFullDrop counters.
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

NAME = "listen_syn_path"
SYMBOL = "tcp_conn_request"
# kprobe and kretprobe on the same function; the probe table names the method.
VIA = f"kprobe:{SYMBOL}"
MAX_LISTENERS = 4096

# Mirrors struct syn_drop_key / struct syn_drop_count in bpf/listen_syn_path.h.
SYN_DROP_KEY = np.dtype([("netns", "<u4"), ("port", "<u2"), ("cause", "u1"), ("pad", "u1")])
SYN_DROP_COUNT = np.dtype([("drops", "<u8")])
# The SYN_DROP_* values of the header, by the name the snapshot uses.
CAUSES = {1: "syn_queue_full", 2: "accept_queue_full", 3: "other", 4: "final_ack_overflow"}
# Where the final ACK of a handshake is refused for a full accept queue.
FINAL_ACK_SYMBOLS = ("tcp_v4_syn_recv_sock", "tcp_v6_syn_recv_sock")
# The drop reason that shows the final-ACK overflow on kernels that have it (6.4+).
FINAL_ACK_DROP_REASON = "TCP_LISTEN_OVERFLOW"


@dataclass(frozen=True)
class SynDrops:
    """Cumulative SYN-path drops since attach, one row per (netns, port, cause)."""

    keys: np.ndarray     # SYN_DROP_KEY
    counts: np.ndarray   # SYN_DROP_COUNT, aligned with keys


class ListenSynPathProbe:
    name = NAME

    def __init__(self, root: Path = Path("/")) -> None:
        self.root = root
        self._bpf = None
        self._drops: MapReader | None = None
        self.final_ack: tuple[str, ...] = ()   # the final-ACK kprobes attached, if any

    def attach(self, loader: BpfLoader) -> ProbeStatus:
        why_not = why_not_kprobe(loader.info, SYMBOL, self.root)
        if why_not:
            return ProbeStatus(NAME, False, VIA, why_not)
        try:
            self._bpf = loader.compile("listen_syn_path", [f"-DNETPROF_MAX_LISTENERS={MAX_LISTENERS}"])
            self._bpf.attach_kprobe(event=SYMBOL.encode(), fn_name=b"syn_entry")
            self._bpf.attach_kretprobe(event=SYMBOL.encode(), fn_name=b"syn_return")
            self.final_ack = self._attach_final_ack(loader)
        except NetprofError as exc:
            self.detach()
            return ProbeStatus(NAME, False, VIA, str(exc))
        except Exception as exc:  # BCC raises bare Exception when an attach fails
            self.detach()
            return ProbeStatus(NAME, False, VIA, f"attaching to {SYMBOL} failed: {exc}")
        self._drops = MapReader(self._bpf[b"syn_drops"], MapLayout(SYN_DROP_KEY, SYN_DROP_COUNT))
        return ProbeStatus(NAME, True, VIA + (f" + final ACK: {', '.join(self.final_ack)}" if self.final_ack else ""))

    def _attach_final_ack(self, loader: BpfLoader) -> tuple[str, ...]:
        """Kprobes on the final-ACK path, only where skb:kfree_skb cannot show it: kernels
        whose drop reasons lack TCP_LISTEN_OVERFLOW. Elsewhere the drops probe counts it, and
        counting it here too would charge each overflow twice."""
        if FINAL_ACK_DROP_REASON in loader.layout.drop_reasons.values():
            return ()
        attached = []
        for symbol in FINAL_ACK_SYMBOLS:
            if why_not_kprobe(loader.info, symbol, self.root) is None:
                self._bpf.attach_kprobe(event=symbol.encode(), fn_name=b"final_ack_entry")
                self._bpf.attach_kretprobe(event=symbol.encode(), fn_name=b"final_ack_return")
                attached.append(f"kprobe:{symbol}")
        return tuple(attached)

    @property
    def attached(self) -> bool:
        return self._drops is not None

    def read(self) -> SynDrops:
        if self._drops is None:
            raise RuntimeError("read() before a successful attach()")
        keys, counts = self._drops.read()
        return SynDrops(keys, counts)

    def detach(self) -> None:
        if self._bpf is not None:
            release_and_report(self._bpf, "listen_syn_path")
            self._bpf.cleanup()
        self._bpf = None
        self._drops = None


def drops_by_listener(drops: SynDrops) -> dict[tuple[int, int], dict[str, int]]:
    """(netns, port) → {cause name: drops}, from one read."""
    out: dict[tuple[int, int], dict[str, int]] = {}
    for key, count in zip(drops.keys, drops.counts):
        cause = CAUSES.get(int(key["cause"]), "other")
        per_cause = out.setdefault((int(key["netns"]), int(key["port"])), {})
        per_cause[cause] = per_cause.get(cause, 0) + int(count["drops"])
    return out
