"""Sources turn one probe's (or one counter file's) cumulative readings into per-interval
fields of a snapshot. One module per signal; the sampler only knows the `Source` protocol."""
