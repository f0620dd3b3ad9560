#!/usr/bin/env bash
# Build the DaemonSet image from deploy/Dockerfile with podman, without any registry:
# `FROM debian:bookworm-slim` is satisfied by a base made here with debootstrap and
# `podman import`ed under that name, and the build never pulls.
#
#   deploy/build-image.sh            (or: make image)     as root, on Debian/Ubuntu
#
# Environment:
#   NETPROF_IMAGE            the tag to build (default localhost/netprof:0.1.0)
#   NETPROF_PODMAN_ROOT      podman storage to use (default: podman's own)
#   NETPROF_PODMAN_RUNROOT   its run root (with NETPROF_PODMAN_ROOT)
#   NETPROF_CA_BUNDLE        a CA bundle mounted for the build only, for pip
#                            (default /etc/ssl/certs/ca-certificates.crt when it exists):
#                            behind a TLS-inspecting proxy the image's own bundle fails.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
image=${NETPROF_IMAGE:-localhost/netprof:0.1.0}
base=docker.io/library/debian:bookworm-slim
cache=${XDG_CACHE_HOME:-$HOME/.cache}/netprof/image
ca=${NETPROF_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

die() { echo "build-image: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "run as root (debootstrap and podman's storage need it)"

missing=()
for pkg in podman debootstrap; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get to install them"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

podman=(podman)
if [ -n "${NETPROF_PODMAN_ROOT:-}" ]; then
  podman+=(--root "$NETPROF_PODMAN_ROOT" --runroot "${NETPROF_PODMAN_RUNROOT:-$NETPROF_PODMAN_ROOT.run}")
fi

# The base: Debian's minimal bootstrap, trimmed like the official slim image (no docs,
# manuals or translations, and dpkg told to keep it that way), kept as a tarball.
if ! "${podman[@]}" image exists "$base"; then
  tarball="$cache/debian-bookworm-minbase.tar"
  if [ ! -f "$tarball" ]; then
    mkdir -p "$cache"
    rootfs="$cache/rootfs.partial"
    rm -rf "$rootfs"
    echo "build-image: debootstrap --variant=minbase bookworm (a few minutes)"
    # The mirror this machine's apt uses (none named here); debootstrap's default without one.
    # shellcheck source=deploy/debian-mirror.sh
    . "$here/deploy/debian-mirror.sh"
    debootstrap --variant=minbase bookworm "$rootfs" $(debian_mirror) >/dev/null
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/netprof-slim" <<'SLIM'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
SLIM
    # As the official image: downloaded .debs are deleted once installed.
    echo 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };' \
      >"$rootfs/etc/apt/apt.conf.d/docker-clean"
    find "$rootfs/usr/share/doc" -mindepth 1 -not -name copyright -not -type d -delete
    rm -rf "$rootfs"/usr/share/{man,info,locale}/* "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*
    tar --numeric-owner -C "$rootfs" -cf "$tarball.partial" .
    mv "$tarball.partial" "$tarball"
    rm -rf "$rootfs"
  fi
  "${podman[@]}" import --change 'CMD ["bash"]' "$tarball" "$base" >/dev/null
fi

# podman sets its own default ulimits, and raising one past the hard limit needs
# CAP_SYS_RESOURCE, which root may lack (it does in some sandboxes): ask for limits within
# this shell's (nproc: at most podman's own default; 96369 was refused where 32768 was
# not). --network host: apt and pip reach the network as this machine does.
nofile=$(ulimit -Hn) nproc=$(ulimit -Hu)
[ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ] && nproc=32768
[ "$nofile" = unlimited ] && nofile=1048576
build=(build --pull=never --network host -f "$here/deploy/Dockerfile" -t "$image"
       --ulimit "nofile=$nofile:$nofile" --ulimit "nproc=$nproc:$nproc")
if [ -f "$ca" ]; then
  # Beside the image's own bundle, not over it (ca-certificates replaces that file).
  build+=(-v "$(readlink -f "$ca"):/run/build-ca-bundle.crt:ro" --build-arg PIP_CERT=/run/build-ca-bundle.crt)
fi
"${podman[@]}" "${build[@]}" "$here"
size=$("${podman[@]}" image inspect --format '{{.Size}}' "$image")
echo "build-image: $image, $((size / 1000000)) MB"
