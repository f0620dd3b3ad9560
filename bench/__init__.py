"""netprof's overhead benchmark: `make bench` or `python -m bench` (see bench/README.md)."""
