"""Percentiles of bucketed distributions: one interpolation for every view.

The kernel keeps distributions as histograms (softirq run times and queueing delays in log2
buckets of nanoseconds, accept-queue depths in log2 buckets of connections). The report, the
dashboard, the histogram exports and the profile document all read percentiles through this
module, so one capture shows one p99 wherever it is looked at.

Percentiles interpolate linearly inside the bucket that holds the wanted rank, the method of
Prometheus' histogram_quantile(), so the numbers agree with a Grafana panel over `netprof
serve`'s metrics. A rank that falls in the open-ended last bucket gives its lower bound (the
histogram says only "at least this").

Bucket bounds are half-open [lo, hi). The kernel's log2 histograms put value v in bucket
floor(log2 v), with 0 and 1 both in bucket 0 and the last slot open-ended, so bucket 0 is
[0, 2), bucket i is [2^i, 2^(i+1)) and the last is [2^31, ∞). Accept-queue depths are small
integers: bucket 0 is an empty queue [0, 1), bucket i >= 1 is [2^(i-1), 2^i).
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .kernel.log2_histogram import LOG2_SLOTS

PERCENTILES = (0.5, 0.9, 0.99)


def log2_ns_bounds(buckets: int, slots: int = LOG2_SLOTS) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Bounds of the kernel's log2 histogram buckets (bpf/softirq.bpf.c log2_slot())."""
    lower = tuple(0.0 if i == 0 else float(1 << i) for i in range(buckets))
    upper = tuple(math.inf if i == slots - 1 else float(1 << (i + 1)) for i in range(buckets))
    return lower, upper


def depth_bounds(buckets: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Bounds of the accept-queue depth buckets (profiler/system/listeners.py depth_bucket())."""
    lower = tuple(0.0 if i == 0 else float(1 << (i - 1)) for i in range(buckets))
    upper = tuple(float(1 << i) for i in range(buckets))
    return lower, upper


def bucket_percentiles(counts: Sequence[int], lower: Sequence[float], upper: Sequence[float],
                       quantiles: Sequence[float] = PERCENTILES) -> np.ndarray:
    """Quantiles of the values a histogram counted, interpolated linearly in their bucket.

    NaN for an empty histogram. For quantile q the rank is q·N; the bucket is the first
    whose cumulative count reaches the rank, and the value lo + (hi - lo)·(rank - below)/count,
    or lo when that bucket is open-ended.
    """
    counts_f = np.asarray(counts, dtype=np.float64)
    q = np.asarray(quantiles, dtype=np.float64)
    if counts_f.size == 0 or counts_f.sum() <= 0:
        return np.full(q.shape, np.nan)
    cumulative = np.cumsum(counts_f)
    # q = 0 means the smallest value: the first non-empty bucket, not an empty one before it.
    ranks = np.maximum(q * cumulative[-1], np.finfo(np.float64).tiny)
    index = np.minimum(np.searchsorted(cumulative, ranks, side="left"), counts_f.size - 1)
    below = np.where(index > 0, cumulative[index - 1], 0.0)
    fraction = np.clip((ranks - below) / counts_f[index], 0.0, 1.0)
    lo = np.asarray(lower, dtype=np.float64)[index]
    hi = np.asarray(upper, dtype=np.float64)[index]
    return np.where(np.isinf(hi), lo, lo + (hi - lo) * fraction)


def log2_percentiles_ns(counts: Sequence[int], quantiles: Sequence[float] = PERCENTILES) -> list[float | None]:
    """Percentiles (ns) of a kernel log2 histogram as the capture stores it; None for an
    empty histogram."""
    lower, upper = log2_ns_bounds(len(counts))
    values = bucket_percentiles(counts, lower, upper, quantiles)
    return [None if math.isnan(v) else float(v) for v in values]


def log2_percentile_ns(counts: Sequence[int], quantile: float) -> float | None:
    """One percentile (ns) of a kernel log2 histogram; None when it is empty."""
    return log2_percentiles_ns(counts, (quantile,))[0]
