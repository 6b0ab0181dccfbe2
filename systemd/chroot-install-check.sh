#!/usr/bin/env bash
# The install in a fresh Debian 12 root, by hand (not in the pytest suite: it downloads Debian
# with debootstrap and takes minutes). Follows docs/installing.md steps 1-5 in a chroot: no
# systemd runs there, so the script gets --no-systemd; everything else is as on a gate.
#
#   sudo systemd/chroot-install-check.sh [DIR]      (DIR default /tmp/schoolgate-debian)
#
# Where pip reaches its index through local wheel folders or a proxy with its own CA (as on the
# development machine), set BIND="/opt/wheels /opt/pypi" to bind those folders in read-only; the
# host's CA bundle is copied in.
set -euo pipefail
cd "$(dirname "$0")/.."
R=${1:-/tmp/schoolgate-debian}
[ "$(id -u)" -eq 0 ] || { echo "run as root" >&2; exit 1; }
command -v debootstrap >/dev/null || apt-get install -y debootstrap
[ -x "$R/usr/bin/apt-get" ] || debootstrap --variant=minbase bookworm "$R" http://deb.debian.org/debian
cp /etc/resolv.conf "$R/etc/resolv.conf"
mkdir -p "$R/etc/ssl/certs" && cp /etc/ssl/certs/ca-certificates.crt "$R/etc/ssl/certs/"
mounts=("$R/proc")
mountpoint -q "$R/proc" || mount -t proc proc "$R/proc"
for d in ${BIND:-}; do
  mkdir -p "$R$d"; mountpoint -q "$R$d" || mount --bind -o ro "$d" "$R$d"; mounts+=("$R$d")
done
trap 'for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || true; done' EXIT
rm -rf "$R/usr/local/src/schoolgate" && mkdir -p "$R/usr/local/src/schoolgate"
git archive HEAD | tar -x -C "$R/usr/local/src/schoolgate"
in_root() { chroot "$R" /bin/bash -c "cd /usr/local/src/schoolgate && $*"; }
in_root 'export DEBIAN_FRONTEND=noninteractive; apt-get update -qq && apt-get install -y -qq python3 git >/dev/null'
in_root 'systemd/install.sh --no-systemd'                    # step 2, first run
in_root 'systemd/install.sh --no-systemd'                    # and again: the same result
in_root 'id -nG schoolgate | grep -qw dialout'
in_root 'test "$(stat -c "%U:%G %a" /etc/schoolgate)" = "root:schoolgate 750"'
in_root 'test "$(command -v schoolgate)" = /usr/local/bin/schoolgate && schoolgate --version'
in_root 'grep -q "^EnvironmentFile=-/etc/schoolgate/environment" /etc/systemd/system/schoolgate.service'
echo "install in a fresh Debian root: ok"
