#!/usr/bin/env bash
# netprof on the VM, installed exactly as the README says: ./bootstrap.sh setup (OS packages,
# tracefs, a venv that sees the OS's BCC). Then `netprof` on root's PATH.
set -euo pipefail

src=/opt/netprof
[ -x "$src/bootstrap.sh" ] || { echo "provision: $src/bootstrap.sh missing (vagrant rsync?)" >&2; exit 1; }

export DEBIAN_FRONTEND=noninteractive
"$src/bootstrap.sh" setup
ln -sf "$src/.venv/bin/netprof" /usr/local/bin/netprof
netprof --version
