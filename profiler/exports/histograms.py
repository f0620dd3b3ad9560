"""Every distribution a capture keeps, as histograms with explicit bucket bounds, and
percentiles computed from the buckets.

Distributions in a capture (the profile JSON):

- `softirq_latency_ns` — softirq handler run time (entry → exit) per CPU and vector
  (`cpus[].softirq.<vector>.latency_log2_ns`);
- `softirq_queue_delay_ns` — raise → entry delay per CPU and vector (`queue_delay_log2_ns`);
- `listen_accept_queue_depth` — sampled accept-queue depth per listener
  (`pods[].listen[].accept_queue_depth_log2`).

Bucket bounds are half-open [lo, hi). The kernel's log2 histograms put value v in bucket
floor(log2 v), with 0 and 1 both in bucket 0 and the last slot open-ended, so bucket 0 is
[0, 2), bucket i is [2^i, 2^(i+1)) and the last is [2^31, ∞) (hi = None in JSON, "inf" in
CSV). Accept-queue depths are small integers: bucket 0 is an empty queue [0, 1), bucket
i >= 1 is [2^(i-1), 2^i).

Percentiles interpolate linearly inside the bucket that holds the wanted rank
(profiler/percentiles.py, the one interpolation every view uses), the method of
Prometheus' histogram_quantile(), so the numbers here agree with a Grafana panel over
`netprof serve`'s metrics. A rank that falls in the open-ended last bucket gives its lower
bound (the histogram says only "at least this"). Where the largest value is known (a
listener's peak depth), no bucket reaches past it: a queue that sat at 64-65 of a 64 limit
has p50 ≈ 65, not 96, the middle of [64, 128).
"""
from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..document import ProfileDocument
from ..inert import inert_tree
from ..snapshot import QUEUE_DELAY_DESCRIPTION
from ..percentiles import (  # noqa: F401  (the one interpolation; imported from here too)
    PERCENTILES, bucket_percentiles, depth_bounds, log2_ns_bounds, log2_percentiles_ns,
)

SCHEMA = "netprof.histograms/v1"
CSV_COLUMNS = ("histogram", "unit", "pod", "netns", "cpu", "vector", "address", "port", "lo", "hi", "count")
LABEL_COLUMNS = ("pod", "netns", "cpu", "vector", "address", "port")


@dataclass(frozen=True)
class Histogram:
    name: str
    unit: str
    description: str
    labels: dict[str, str | int]
    lower: tuple[float, ...]            # bucket i is [lower[i], upper[i])
    upper: tuple[float, ...]            # math.inf for an open-ended bucket
    counts: tuple[int, ...]
    # Integer values never above this (a listener's peak depth): caps the buckets for percentiles.
    max_value: int | None = None

    @property
    def total(self) -> int:
        return sum(self.counts)

    def percentiles(self, quantiles: Sequence[float] = PERCENTILES) -> list[float | None]:
        upper = self.upper if self.max_value is None else tuple(
            max(lo, min(hi, self.max_value + 1)) for lo, hi in zip(self.lower, self.upper))
        values = bucket_percentiles(self.counts, self.lower, upper, quantiles)
        return [None if math.isnan(v) else float(v) for v in values]

    def to_json(self) -> dict:
        percentiles = self.percentiles()
        return {
            "name": self.name,
            "unit": self.unit,
            "description": self.description,
            "labels": dict(self.labels),
            "count": self.total,
            **({"max": self.max_value} if self.max_value is not None else {}),
            "buckets": [{"lo": _number(lo), "hi": None if math.isinf(hi) else _number(hi), "count": count}
                        for lo, hi, count in zip(self.lower, self.upper, self.counts)],
            "percentiles": {_percentile_name(q): _round(v) for q, v in zip(PERCENTILES, percentiles)},
        }


def capture_histograms(doc: dict) -> list[Histogram]:
    """Every non-empty distribution in a profile JSON document."""
    document = ProfileDocument(inert_tree(doc))  # its labels (pod, address, vector) are outside text
    histograms: list[Histogram] = []
    for cpu in document.cpus:
        for vector in sorted(cpu.softirq):
            for counts_of, name, description in (
                (cpu.latency_log2_ns, "softirq_latency_ns", "softirq handler run time, softirq_entry to softirq_exit"),
                (cpu.queue_delay_log2_ns, "softirq_queue_delay_ns", QUEUE_DELAY_DESCRIPTION),
            ):
                counts = tuple(counts_of(vector))
                if sum(counts):
                    lower, upper = log2_ns_bounds(len(counts))
                    histograms.append(Histogram(name, "ns", description, {"cpu": cpu.cpu, "vector": vector},
                                                lower, upper, counts))
    for pod, listener in document.listeners():
        counts = listener.depth_log2
        if sum(counts):
            lower, upper = depth_bounds(len(counts))
            histograms.append(Histogram(
                "listen_accept_queue_depth", "connections",
                "sampled accept-queue depth of a listener (connections waiting for accept())",
                {"pod": pod.name, "netns": pod.netns, "address": listener.address, "port": listener.port},
                lower, upper, counts, max_value=listener.reported("accept_queue_peak")))
    return histograms


def histograms_json(doc: dict) -> str:
    doc = inert_tree(doc)
    histograms = capture_histograms(doc)
    document = {
        "schema": SCHEMA,
        "capture": {"started_at": doc.get("started_at"), "duration_s": doc.get("duration_s")},
        "percentile_method": "linear interpolation inside the bucket holding rank q*count "
                             "(as Prometheus histogram_quantile); lower bound for an open-ended bucket",
        "histograms": [h.to_json() for h in histograms],
    }
    return json.dumps(document, indent=2) + "\n"


def histograms_csv(doc: dict) -> str:
    """One row per bucket (long form: filter and pivot in any tool)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for histogram in capture_histograms(doc):
        labels = [histogram.labels.get(column, "") for column in LABEL_COLUMNS]
        for lo, hi, count in zip(histogram.lower, histogram.upper, histogram.counts):
            writer.writerow([histogram.name, histogram.unit, *labels, _number(lo),
                             "inf" if math.isinf(hi) else _number(hi), count])
    return out.getvalue()


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _percentile_name(q: float) -> str:
    return f"p{q * 100:g}"


def percentile_names(quantiles: Iterable[float] = PERCENTILES) -> list[str]:
    return [_percentile_name(q) for q in quantiles]
