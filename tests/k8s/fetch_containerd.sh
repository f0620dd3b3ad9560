#!/usr/bin/env bash
# Unpack newer containerd releases from Debian's newer suites into a private folder, for
# tests/k8s to run against beside the apt one. Nothing is installed on the host: a private
# apt index (its own sources.list, lists and cache), `apt-get download`, `dpkg -x`.
#
#   tests/k8s/fetch_containerd.sh [DEST]    DEST defaults to ~/.cache/netprof/containerd-debs
#
# Each release lands in DEST/<suite>-<version>/usr/bin/{containerd,ctr,containerd-shim-runc-v2}.
# Already unpacked versions are kept; a suite that cannot be reached is skipped with a warning.
set -euo pipefail

dest=${1:-${NETPROF_CONTAINERD_DEBS:-${XDG_CACHE_HOME:-$HOME/.cache}/netprof/containerd-debs}}
suites=(trixie sid)   # 1.7.x and 2.x as of 2026
have_all=1
for suite in "${suites[@]}"; do
  compgen -G "$dest/$suite-*/usr/bin/containerd" >/dev/null || have_all=0
done
[ "$have_all" = 1 ] && exit 0   # delete DEST to pick up newer versions
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/lists/partial" "$work/cache/archives/partial" "$dest"
# The mirror this machine's apt already uses: nothing here names one of its own.
# shellcheck source=deploy/debian-mirror.sh
. "$(dirname "${BASH_SOURCE[0]}")/../../deploy/debian-mirror.sh"
mirror=$(debian_mirror)
if [ -z "$mirror" ]; then
  echo "fetch_containerd: no Debian mirror in this machine's apt sources; only the apt containerd will be tested" >&2
  exit 0
fi
for suite in "${suites[@]}"; do
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main"
done >"$work/sources.list"
apt_opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o Dir::Etc::SourceParts=/dev/null
          -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache" -o APT::Sandbox::User=root)
if ! apt-get -qq "${apt_opts[@]}" update >/dev/null 2>&1; then
  echo "fetch_containerd: Debian's newer suites cannot be reached; only the apt containerd will be tested" >&2
  exit 0
fi
for suite in "${suites[@]}"; do
  version=$(apt-cache "${apt_opts[@]}" madison containerd | awk -v s="$suite/main" '$0 ~ s {print $3; exit}')
  [ -n "$version" ] || { echo "fetch_containerd: no containerd in $suite" >&2; continue; }
  folder="$dest/$suite-${version%%[~+]*}"
  [ -x "$folder/usr/bin/containerd" ] && continue
  (cd "$work" && apt-get -qq "${apt_opts[@]}" download "containerd=$version" >/dev/null)
  rm -rf "$folder.partial" && mkdir -p "$folder.partial"
  dpkg -x "$work"/containerd_*.deb "$folder.partial"
  rm -f "$work"/containerd_*.deb
  mv "$folder.partial" "$folder"
  echo "fetch_containerd: $("$folder/usr/bin/containerd" --version) in $folder"
done
