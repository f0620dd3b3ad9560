#!/usr/bin/env bash
# Set up netprof on a fresh Debian/Ubuntu machine, then run the demo or the test suite.
#
#   ./bootstrap.sh demo    set up, then: fake pods up -> profile -> report -> fake pods down
#   ./bootstrap.sh test    set up, then run the whole test suite
#   ./bootstrap.sh setup   set up only
#   ./bootstrap.sh test-setup  set up for the tests (their packages too), without running them
#
# Run as root: netprof loads BPF programs and the lab creates network namespaces.
# Idempotent: a second run only checks what the first installed.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv="$here/.venv"
action=${1:-setup}

die() { echo "bootstrap: $*" >&2; exit 1; }

case "$action" in
  setup|demo|test|test-setup) ;;
  -h|--help) sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) die "unknown action '$action' (use: setup, demo, test or test-setup)" ;;
esac

[ "$(id -u)" -eq 0 ] || die "run as root (BPF programs and network namespaces need it)"

# What the OS must provide. BCC comes from the OS: the PyPI package named "bcc" is another
# project. python3-bpfcc is pure Python over libbcc, seen by the venv through
# --system-site-packages.
# ruby: only to syntax-check vagrant/Vagrantfile in the tests.
os_packages=(python3-bpfcc libbpfcc iproute2 nftables python3-venv procps ruby)
# Test time only, the real consumers of netprof's output: chromium opens the flame-graph SVG
# headless and runs its script; a real Prometheus server scrapes `netprof serve`
# (tests/integration/test_serve_hardening.py, test_prometheus.py). Only their binaries are
# used; the packaged Prometheus service is never started (see the policy-rc.d below).
# The Kubernetes tier (tests/k8s) runs a private containerd with its CRI plugin, runc and the
# CNI plugins, and makes its pods' image from busybox-static (no registry).
test_packages=(chromium prometheus containerd runc containernetworking-plugins busybox-static)
case "$action" in test|test-setup) os_packages+=("${test_packages[@]}") ;; esac
missing=()
for pkg in "${os_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing OS packages ${missing[*]} and no apt-get to install them"
  echo "bootstrap: installing ${missing[*]}"
  apt-get update -qq
  # No package's service may start on install (prometheus would listen on :9090): policy-rc.d
  # exit 101 tells invoke-rc.d and deb-systemd-invoke not to, unless the machine has its own.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy" && own_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
    || { if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi; die "apt-get install ${missing[*]} failed"; }
  if [ "$own_policy" = 1 ]; then rm -f "$policy"; fi
fi

# BCC reads tracepoint formats from tracefs.
if [ ! -d /sys/kernel/tracing/events ] && [ ! -d /sys/kernel/debug/tracing/events ]; then
  mount -t tracefs tracefs /sys/kernel/tracing || die "cannot mount tracefs on /sys/kernel/tracing"
fi

# The OS's python3 is the one python3-bpfcc was built for; a venv over it with system site
# packages sees bcc and gets everything else from PyPI.
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c "import bcc" 2>/dev/null; then
  rm -rf "$venv"
  /usr/bin/python3 -m venv --system-site-packages "$venv"
fi
stamp="$venv/.netprof-installed"
if [ ! -f "$stamp" ] || [ "$here/pyproject.toml" -nt "$stamp" ]; then
  # -qq: errors only (a machine-wide pip.conf may add noisy find-links warnings).
  "$venv/bin/pip" install -qq --disable-pip-version-check -e "$here[test]"
  touch "$stamp"
fi
"$venv/bin/python" -c "import bcc, pyroute2, numpy, rich, textual, prometheus_client" \
  || die "the venv at $venv cannot import its dependencies"

case "$action" in
  setup) echo "bootstrap: ready — $venv/bin/netprof --help" ;;
  test-setup) echo "bootstrap: ready for the tests — $venv/bin/python -m pytest tests" ;;
  demo) exec "$venv/bin/netprof" lab demo ;;
  test)
    # containerd 1.7 and 2.x for tests/k8s, unpacked privately (best effort: the apt 1.6 runs anyway).
    "$here/tests/k8s/fetch_containerd.sh" || echo "bootstrap: newer containerd releases not fetched" >&2
    cd "$here" && exec "$venv/bin/python" -m pytest -q -ra tests ;;
esac
