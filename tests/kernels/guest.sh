#!/usr/bin/env bash
# Runs inside the guest (tests/kernels/vm.py starts it): shape the guest like the node the
# matrix entry stands for, record what netprof sees, run the command, write its exit status.
#
#   NETPROF_GUEST_OUT           the --rwdir results come back through
#   NETPROF_GUEST_REPO          the checkout (overlaid: writable here, unchanged on the host)
#   NETPROF_GUEST_HIDE_HEADERS  1: tmpfs over /usr/src, so /lib/modules/<rel>/{build,source}
#                               dangle, as on a node without headers
#   NETPROF_GUEST_HIDE_BTF      1: tmpfs over /sys/kernel/btf, so netprof must use headers
#   NETPROF_GUEST_PROBE_TABLE   0: no probe-table capture at boot
#   NETPROF_GUEST_PYTEST_MARK   a pytest -m expression: the command's pytest runs only the
#                               tests it selects (the harness's parallel_cpus phases)
#   NETPROF_GUEST_USER_NET      1: eth0 is on QEMU's user-mode NAT (vng --network user);
#                               give it the address, route and DNS QEMU's DHCP would
set -uo pipefail
out=${NETPROF_GUEST_OUT:?}
# The harness's boot watchdog (vm.py BOOT_LIMIT_S) waits for this file.
date +%s > "$out/guest_started"
cd "${NETPROF_GUEST_REPO:?}" || exit 99

if [ "${NETPROF_GUEST_HIDE_HEADERS:-0}" = 1 ]; then
  mount -t tmpfs -o size=1m,mode=755 netprof-no-headers /usr/src || exit 98
fi
if [ "${NETPROF_GUEST_HIDE_BTF:-0}" = 1 ]; then
  mount -t tmpfs -o size=1m,mode=755 netprof-no-btf /sys/kernel/btf || exit 98
fi
[ -d /sys/kernel/tracing/events ] || mount -t tracefs tracefs /sys/kernel/tracing

# QEMU's user-mode network: 10.0.2.15/24, gateway 10.0.2.2, DNS 10.0.2.3 (its built-in
# DHCP server's answers; virtme-ng's init asks nobody, so they are set here).
if [ "${NETPROF_GUEST_USER_NET:-0}" = 1 ]; then
  # virtio_net may still be loading when this starts (seen: "Cannot find device eth0").
  for _ in $(seq 1 60); do [ -e /sys/class/net/eth0 ] && break; sleep 0.5; done
  ip addr replace 10.0.2.15/24 dev eth0 && ip link set eth0 up \
    && ip route replace default via 10.0.2.2 && echo "nameserver 10.0.2.3" > /etc/resolv.conf || exit 97
fi

# The lab's conntrack scenarios and the conntrack_confirm kprobe need nf_conntrack; a host
# with nftables rules has it loaded, a fresh guest does not.
modprobe nf_conntrack 2>/dev/null || true

# NETPROF_LAB_TIME_SCALE: software emulation runs 5-10x slower; lab workloads get that much
# longer to start and finish (what they measure is unchanged).
export NETPROF_REQUIRE_BPF=1 PYTHONDONTWRITEBYTECODE=1 NETPROF_LAB_TIME_SCALE=10
# A test stuck for 10 minutes dumps every thread's stack to the console (pytest's own
# faulthandler), so a guest killed at its time limit says where it was.
export PYTEST_ADDOPTS="${PYTEST_ADDOPTS:-} -o faulthandler_timeout=600"
if [ -n "${NETPROF_GUEST_PYTEST_MARK:-}" ]; then
  # pytest splits PYTEST_ADDOPTS like a shell: the quotes keep "not parallel_cpus" one word.
  PYTEST_ADDOPTS="$PYTEST_ADDOPTS -m '${NETPROF_GUEST_PYTEST_MARK}'"
fi
uname -r > "$out/uname"
# The probe table of this kernel: what attached, by which method, and why not
# (NETPROF_GUEST_PROBE_TABLE=0: an entry that boots a kernel another entry already tabled).
if [ "${NETPROF_GUEST_PROBE_TABLE:-1}" = 1 ]; then
  timeout 600 .venv/bin/netprof profile -d 2 --json > "$out/profile.json" 2> "$out/profile.err"
  echo $? > "$out/profile_status"
fi

bash -c "$1"
status=$?
# What a long tier left behind, for a test that failed late and passes alone: memory (the
# copy-on-write view's writes live in the guest's RAM), namespaces and processes left over.
{ free -m; df -h / /tmp /root 2>/dev/null; echo "netns: $(ip netns list | wc -l)"
  ps -eo pid,etimes,time,rss,args --sort=-time | head -15; } > "$out/after.txt" 2>&1
echo $status > "$out/exit_status"
