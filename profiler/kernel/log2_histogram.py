"""The layout of netprof's in-kernel log2 histograms, shared by the probe that fills them
(profiler.probes.softirq, which passes it to the BPF program as -DNETPROF_LOG2_SLOTS) and the
views that turn buckets into bounds (profiler.exports.histograms, the Prometheus export)."""
from __future__ import annotations

# Bucket i holds [2^i, 2^(i+1)) ns; 2^31 ns ≈ 2.1 s, so the last bucket means "seconds".
LOG2_SLOTS = 32
