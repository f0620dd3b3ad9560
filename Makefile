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

# The kernel matrix under QEMU (tests/kernels/, docs/kernels.md): installs qemu, the kernel
# packages and virtme-ng (own venv) on first use. Hours for the whole matrix on 2 CPUs.
#   make kernels                       every kernel, the integration tests inside each
#   make kernels KERNELS=bookworm-6.1  one kernel (space-separated names for several)
#   make kernels-docs                  re-render docs/kernels.md from build/kernels/
KERNELS ?=
KERNEL_ARGS ?=

KERNELS_CI_OUT ?= build/kernels-ci

.PHONY: kernels kernels-docs kernels-ci kernels-ci-mq ci-guests

# CI's guest tier (python -m tests.kernels --ci: each entry's matrix.py ci_command). Each target
# installs what it lacks (qemu, busybox, the 6.1 kernel and headers, virtme-ng in its own venv)
# and exits non-zero if any guest did not boot or any of its tests failed.
#   make kernels-ci      the subset that covers every probe (CI_SUBSET_FILES) on Debian 6.1
#   make kernels-ci-mq   the 4-queue NIC guest's short selection (CI_MQ_FILES) and the NIC drivers guest
#   make ci-guests       both, in one run: every guest runs even when an earlier one failed
kernels-ci:
	$(PYTHON) -m tests.kernels --ci -k bookworm-6.1 --out $(KERNELS_CI_OUT)

kernels-ci-mq:
	$(PYTHON) -m tests.kernels --ci -k bookworm-6.1-mq -k bookworm-6.1-nics --out $(KERNELS_CI_OUT)

ci-guests:
	$(PYTHON) -m tests.kernels --ci --out $(KERNELS_CI_OUT)

kernels:
	$(PYTHON) -m tests.kernels $(foreach k,$(KERNELS),-k $(k)) --docs docs/kernels.md $(KERNEL_ARGS)

kernels-docs:
	$(PYTHON) -c "from pathlib import Path; from tests.kernels import results; \
	Path('docs/kernels.md').write_text(results.render_markdown(results.load_all(Path('build/kernels')), \
	Path('tests/kernels/kernels_header.md').read_text()))"

# Issue 19's NIC guests: bookworm-6.1-mq (4 vCPUs, a 4-queue virtio-net NIC on a multi_queue
# tap in a private netns: IRQ affinity, RPS/XPS and irqbalance measured with the kernel's own
# counters) and bookworm-6.1-nics (e1000e + vmxnet3 queue IRQ names). tests/kernels/{mq,nics}.
.PHONY: kernels-mq
kernels-mq:
	$(PYTHON) -m tests.kernels -k bookworm-6.1-mq -k bookworm-6.1-nics $(KERNEL_ARGS)

# Issue 14 item 6: the Vagrant box's provision script (vagrant/provision/netprof.sh) run for
# real as `vagrant up` runs it, in a Debian 6.1 guest on QEMU's user-mode NAT (apt and PyPI),
# then the demo's programs under the netprof it installed (tests/kernels/vagrant). ~15 min.
# What cannot run here (Vagrant's box, k3s, the images) and why: docs/vagrant.md.
.PHONY: vagrant-guest
vagrant-guest:
	$(PYTHON) -m tests.kernels -k bookworm-6.1-vagrant $(KERNEL_ARGS)
