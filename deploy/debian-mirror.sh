# Sourced by scripts that read Debian's archive themselves (debootstrap, a private apt index):
# `debian_mirror` prints the mirror this machine's own apt is configured with, so nothing
# here names a mirror of its own. Empty when none is found (debootstrap then uses its default).
debian_mirror() {
  local uri
  uri=$(awk '/^URIs:/ { for (i = 2; i <= NF; i++) if ($i !~ /security/) { print $i; exit } }' \
          /etc/apt/sources.list.d/*.sources 2>/dev/null | head -n 1)
  if [ -z "$uri" ] && [ -f /etc/apt/sources.list ]; then
    uri=$(awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) { if ($i !~ /security/) { print $i; exit } } }' \
            /etc/apt/sources.list | head -n 1)
  fi
  printf '%s' "$uri"
}
