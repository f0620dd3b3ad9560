# netprof developer targets.
#
#   make bench        the overhead benchmark: prints its tables (Markdown) on stdout, ~8 min
#                     BENCH_ARGS="--repeats 5 --duration 4" or NETPROF_BENCH_* to change it
#   make bench-deps   the Debian packages the benchmark drives (iperf3, sockperf, bpfcc-tools)

PYTHON ?= .venv/bin/python
BENCH_ARGS ?=
BENCH_PACKAGES = iperf3 sockperf bpfcc-tools gcc

.PHONY: bench bench-deps

bench:
	$(PYTHON) -m bench $(BENCH_ARGS)

bench-deps:
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(BENCH_PACKAGES)
