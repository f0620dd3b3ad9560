"""The detail tier: which of netprof's BPF programs run, and when that changes.

netprof's programs fall in two groups by what they cost a node that has no trouble:

- **Always on** — counted only when something goes wrong, or read from /proc: drops by
  reason (`skb:kfree_skb` runs for every freed skb, but a non-drop costs one compare),
  retransmits, listen queues, softnet_stat, SNMP/netstat, conntrack statistics.
- **Detail** (`DETAIL_PROGRAMS`) — on the packet path whatever happens: softirq time and
  latency (three tracepoints on every softirq of every vector), NAPI polls (one per poll),
  and the kernel stack walks of the drop and retransmit programs (µs each).

Tiers: `full` runs everything; `quiet` runs only the always-on group. Modes (`--tier`):
`full` and `quiet` pin a tier; `auto` starts quiet, goes to full when the latest second
shows trouble (any figure of `trouble_figures` at or above its threshold), and back to quiet
once every figure has stayed below `calm_ratio` of its threshold for `calm_s` seconds in a
row. Rates are judged over at least `JUDGED_SPAN_S` of sampled time, pooling the latest
intervals: one stray drop in a 90 ms interval (a window restarted, a capture's last partial
interval) is not 11 drops/s, and a sustained storm sampled every 200 ms still reads at its
rate.
The two thresholds and the calm period are the hysteresis: a node hovering at a threshold
does not flap, and the detail stays on long enough to be read.

This module decides; the sampler switches (profiler/sources: softirq and NAPI detach their
tracepoints, the drop and retransmit programs read a "stacks paused" flag), and the capture
records it (`tier` in the profile JSON, profiler/capture.py), which every view reads.
"""
from __future__ import annotations

import math
from collections import Counter, deque
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Mapping

from .snapshot import FULL_TIER, QUIET_TIER, Snapshot, TierSwitch

AUTO = "auto"
MODES = (AUTO, QUIET_TIER, FULL_TIER)
# What the quiet tier switches off, as named in the capture's `probes` list.
DETAIL_PROGRAMS = ("softirq", "napi", "drop_stacks", "retransmit_stacks")
# The capture keeps the latest switches only: a flapping 24-hour serve must not grow forever
# (the counts per direction are kept in full).
MAX_SWITCHES_KEPT = 50
# The least sampled time a rate is judged over: a second, less a default tick's jitter (a
# 0.998 s interval is judged alone, not pooled with the one before, which would halve a
# storm that just began).
JUDGED_SPAN_S = 0.9


@dataclass(frozen=True)
class TierThresholds:
    """Rates (per second, over one interval) at which `auto` goes to the full tier.

    Defaults: a node at rest drops a few packets a second (stray segments to closed ports,
    NO_SOCKET) and retransmits a few; a sustained 50 drops/s or 20 retransmits/s is a
    problem someone will want stacks and softirq latencies for. Any backlog drop
    (softnet_stat `dropped`) is trouble; `time_squeeze` happens on a busy healthy node, so
    its threshold is higher."""

    drops_per_s: float = 50.0
    retransmits_per_s: float = 20.0
    softnet_dropped_per_s: float = 1.0
    time_squeeze_per_s: float = 50.0
    # Back to quiet when every figure stays below calm_ratio × its threshold for calm_s.
    calm_ratio: float = 0.5
    calm_s: float = 60.0

    def limits(self) -> dict[str, float]:
        return {"drops_per_s": self.drops_per_s, "retransmits_per_s": self.retransmits_per_s,
                "softnet_dropped_per_s": self.softnet_dropped_per_s,
                "time_squeeze_per_s": self.time_squeeze_per_s}

    def to_json(self) -> dict:
        return {**self.limits(), "calm_ratio": self.calm_ratio, "calm_s": self.calm_s}


@dataclass(frozen=True)
class TierSettings:
    mode: str = FULL_TIER
    thresholds: TierThresholds = field(default_factory=TierThresholds)

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"tier mode {self.mode!r} is not one of {', '.join(MODES)}")

    @property
    def initial_tier(self) -> str:
        return FULL_TIER if self.mode == FULL_TIER else QUIET_TIER


def trouble_counts(snapshot: Snapshot) -> dict[str, int]:
    """The always-on counts the policy judges, keyed by the name of their rate. Only figures
    the quiet tier has (no softirq, NAPI or stack figure), so quiet and full judge alike."""
    return {
        "drops_per_s": sum(sum(pod.drops.values()) for pod in snapshot.pods),
        "retransmits_per_s": sum(pod.retransmits for pod in snapshot.pods),
        "softnet_dropped_per_s": sum(cpu.softnet.get("dropped", 0) for cpu in snapshot.cpus),
        "time_squeeze_per_s": sum(cpu.softnet.get("time_squeeze", 0) for cpu in snapshot.cpus),
    }


def trouble_figures(snapshot: Snapshot) -> dict[str, float]:
    """`trouble_counts` as rates over this one interval (the policy judges a pooled span:
    `TierPolicy`)."""
    seconds = snapshot.interval_s
    if seconds <= 0:
        return dict.fromkeys(TierThresholds().limits(), 0.0)
    return {name: count / seconds for name, count in trouble_counts(snapshot).items()}


def _why_trouble(figures: Mapping[str, float], limits: Mapping[str, float]) -> str:
    over = [f"{name.removesuffix('_per_s')} {figures[name]:.1f}/s ≥ {limit:g}/s"
            for name, limit in limits.items() if figures[name] >= limit]
    return "trouble: " + ", ".join(over)


class TierPolicy:
    """Decides, once per sampled interval, whether the tier changes (mode `auto`); pinned
    modes never switch. Pure: no kernel, no clock of its own (tests drive it with
    snapshots)."""

    def __init__(self, settings: TierSettings | None = None):
        self.settings = settings or TierSettings()
        self.tier = self.settings.initial_tier
        self._calm_for_s = 0.0
        # The latest intervals, (seconds, trouble_counts), spanning JUDGED_SPAN_S and no more
        # than it takes: the oldest goes once the rest span it without it.
        self._recent: deque[tuple[float, dict[str, int]]] = deque()

    def _judged_figures(self, snapshot: Snapshot) -> dict[str, float]:
        """Rates over the latest intervals that span JUDGED_SPAN_S, this one included; until
        that much has been sampled, counts so far over JUDGED_SPAN_S (never a rate from less
        time than that)."""
        latest = trouble_counts(snapshot)
        self._recent.append((max(snapshot.interval_s, 0.0), latest))
        span_s = sum(seconds for seconds, _ in self._recent)
        while len(self._recent) > 1 and span_s - self._recent[0][0] >= JUDGED_SPAN_S:
            span_s -= self._recent.popleft()[0]
        judged_s = max(span_s, JUDGED_SPAN_S)
        return {name: sum(counts[name] for _, counts in self._recent) / judged_s for name in latest}

    @property
    def detail_on(self) -> bool:
        return self.tier == FULL_TIER

    def observe(self, snapshot: Snapshot, at: float) -> TierSwitch | None:
        """The switch to make after this interval (made at wall-clock `at`), or None."""
        if self.settings.mode != AUTO:
            return None
        thresholds = self.settings.thresholds
        limits = thresholds.limits()
        figures = self._judged_figures(snapshot)
        rounded = MappingProxyType({name: round(value, 3) for name, value in figures.items()})
        if any(figures[name] >= limit for name, limit in limits.items()):
            self._calm_for_s = 0.0
            if self.tier == QUIET_TIER:
                self.tier = FULL_TIER
                return TierSwitch(at, FULL_TIER, _why_trouble(figures, limits), rounded)
            return None
        calm = all(figures[name] < thresholds.calm_ratio * limit for name, limit in limits.items())
        self._calm_for_s = self._calm_for_s + snapshot.interval_s if calm else 0.0
        if self.tier == FULL_TIER and self._calm_for_s >= thresholds.calm_s:
            self.tier = QUIET_TIER
            self._calm_for_s = 0.0
            return TierSwitch(at, QUIET_TIER,
                              f"calm: every figure below {thresholds.calm_ratio:g}× its threshold "
                              f"for {thresholds.calm_s:g}s", rounded)
        return None


class TierTotals:
    """The tier over added-up snapshots (capture.SnapshotTotals holds one): seconds sampled
    in each tier, switches by direction, the latest switches, and the tier in force now."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()
        self.switch_counts: Counter[str] = Counter()
        self.switches: list[TierSwitch] = []
        self.current: str | None = None

    def add(self, snapshot: Snapshot) -> None:
        self.seconds[snapshot.tier] += snapshot.interval_s
        self.current = snapshot.tier
        if snapshot.tier_switch is not None:
            self.switch_counts[snapshot.tier_switch.to] += 1
            self.switches.append(snapshot.tier_switch)
            del self.switches[:-MAX_SWITCHES_KEPT]
            self.current = snapshot.tier_switch.to

    def to_json(self, settings: TierSettings | None) -> dict:
        """The profile JSON's `tier` section. Without settings (a capture assembled by hand,
        or an older caller), the mode is what the intervals ran in."""
        if settings is None:
            settings = TierSettings(mode=AUTO if self.switch_counts else (self.current or FULL_TIER))
        current = self.current or settings.initial_tier
        return {
            "mode": settings.mode,
            "current": current,
            "full_s": round(self.seconds.get(FULL_TIER, 0.0), 3),
            "quiet_s": round(self.seconds.get(QUIET_TIER, 0.0), 3),
            "switches_to_full": self.switch_counts.get(FULL_TIER, 0),
            "switches_to_quiet": self.switch_counts.get(QUIET_TIER, 0),
            "switches": [switch.to_json() for switch in self.switches],
            "detail_programs": list(DETAIL_PROGRAMS),
            "thresholds": settings.thresholds.to_json() if settings.mode == AUTO else None,
        }


def parse_thresholds(text: str, base: TierThresholds | None = None) -> TierThresholds:
    """"drops=100,retransmits=5,calm=120" → thresholds (names without _per_s; `calm` is
    calm_s, `calm_ratio` as is). Raises ValueError with a one-line message."""
    thresholds = base or TierThresholds()
    names = {"drops": "drops_per_s", "retransmits": "retransmits_per_s",
             "softnet_dropped": "softnet_dropped_per_s", "time_squeeze": "time_squeeze_per_s",
             "calm": "calm_s", "calm_ratio": "calm_ratio"}
    values: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, value_text = item.partition("=")
        if not sep or name.strip() not in names:
            raise ValueError(f"{item!r}: want NAME=NUMBER with NAME one of {', '.join(names)}")
        try:
            value = float(value_text)
        except ValueError:
            raise ValueError(f"{item!r}: not a number: {value_text!r}") from None
        if not math.isfinite(value) or value <= 0 or (name.strip() == "calm_ratio" and value > 1):
            raise ValueError(f"{item!r}: must be a positive number" + (" ≤ 1" if name.strip() == "calm_ratio" else ""))
        values[names[name.strip()]] = value
    return replace(thresholds, **values)
