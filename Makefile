# netprof developer targets.
#
#   make bench        the overhead benchmark: prints its tables (Markdown) on stdout, ~8 min
#                     BENCH_ARGS="--repeats 5 --duration 4" or NETPROF_BENCH_* to change it
#   make bench-deps   the Debian packages the benchmark drives (iperf3, sockperf, bpfcc-tools)
#   make image        the DaemonSet image from deploy/Dockerfile with podman, no registry
#                     (deploy/build-image.sh: a debootstrap base; NETPROF_IMAGE=… to retag)
#   make image-test   build it, then run it in the DaemonSet's shape next to a CRI pod
#                     (also part of ./bootstrap.sh test; NETPROF_IMAGE_TEST=0 leaves it out)

PYTHON ?= .venv/bin/python
BENCH_ARGS ?=
BENCH_PACKAGES = iperf3 sockperf bpfcc-tools gcc

.PHONY: bench bench-deps image image-test

bench:
	$(PYTHON) -m bench $(BENCH_ARGS)

bench-deps:
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(BENCH_PACKAGES)

image:
	deploy/build-image.sh

image-test:
	NETPROF_REQUIRE_BPF=1 $(PYTHON) -m pytest -q tests/k8s/test_image.py
