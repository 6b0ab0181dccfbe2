#!/usr/bin/env bash
# Install schoolgate on a Debian or Raspberry Pi OS gateway box, from this checkout.
#
#   sudo systemd/install.sh                    install or upgrade, then (re)start the service
#   systemd/install.sh --prefix DIR --no-systemd --user nobody
#                                              the same tree under DIR, for tests: no systemctl,
#                                              no user created (an existing one is named)
#
# Idempotent: running it twice gives the same result. In order, it
#   1. checks for Python 3.11+,
#   2. creates the system user `schoolgate` in the dialout group (the RS-485 adapters' group),
#   3. makes /etc/schoolgate root:schoolgate 0750 with keys/, secrets/ and tls/ in it, and puts
#      the example config there (root:schoolgate 0640) when there is none,
#   4. makes the venv /opt/schoolgate/venv (installing python3-venv with apt, after an
#      apt-get update, when a venv cannot be created), installs this checkout into it from
#      constraints.txt (skipped when nothing changed), and links /usr/local/bin/schoolgate to
#      it, so `schoolgate` is on the PATH,
#   5. makes private keys and passwords under /etc/schoolgate readable by the service user
#      and nobody else (keys made with `sudo schoolgate keys new` are root's 0600),
#   6. installs the unit, enables it, and starts it when the config checks out,
#   7. runs `schoolgate doctor` (or check-config, in a version without doctor).
# Nothing is downloaded at run time; only this install step uses the package index.
set -euo pipefail
cd "$(dirname "$0")/.."

usage() {
  echo "usage: $0 [--prefix DIR] [--no-systemd] [--user NAME] [--no-doctor]" >&2
  exit 2
}
say() { printf '==> %s\n' "$*"; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

ROOT=""
SYSTEMD=yes
DOCTOR=yes
SERVICE_USER=schoolgate
CREATE_USER=yes
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || usage; ROOT=$(realpath -m "$2"); shift 2 ;;
    --no-systemd) SYSTEMD=no; shift ;;
    --no-doctor) DOCTOR=no; shift ;;
    --user) [ $# -ge 2 ] || usage; SERVICE_USER=$2; CREATE_USER=no; shift 2 ;;
    -h|--help) usage ;;
    *) usage ;;
  esac
done
[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0)"

PREFIX=$ROOT/opt/schoolgate
CONF=$ROOT/etc/schoolgate
BIN=$ROOT/usr/local/bin
UNIT_DIR=$ROOT/etc/systemd/system
PY=${PYTHON:-python3}

# -- 1. Python 3.11+ ------------------------------------------------------------------------------
command -v "$PY" >/dev/null 2>&1 || die "python3 not found: apt-get install python3"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "Python 3.11+ is needed, found $("$PY" -V 2>&1)"

# -- 2. the service user -------------------------------------------------------------------------
if [ "$CREATE_USER" = yes ]; then
  if ! id -u "$SERVICE_USER" >/dev/null 2>&1; then
    say "creating system user $SERVICE_USER"
    useradd --system --home-dir /var/lib/schoolgate --shell /usr/sbin/nologin \
      --user-group "$SERVICE_USER"
  fi
  id -nG "$SERVICE_USER" | tr ' ' '\n' | grep -qx dialout || usermod -a -G dialout "$SERVICE_USER"
else
  id -u "$SERVICE_USER" >/dev/null 2>&1 || die "no user $SERVICE_USER (--user names an existing one)"
fi
GROUP=$(id -gn "$SERVICE_USER")

# -- 3. /etc/schoolgate ----------------------------------------------------------------------------
install -d -m 0755 "$ROOT/etc" "$BIN" "$UNIT_DIR"
install -d -m 0750 -o root -g "$GROUP" "$CONF" "$CONF/keys" "$CONF/secrets" "$CONF/tls"
if [ ! -f "$CONF/schoolgate.toml" ]; then
  install -m 0640 -o root -g "$GROUP" edge_config/examples/school-gate.toml "$CONF/schoolgate.toml"
  say "installed the example config: edit $CONF/schoolgate.toml"
fi
chown root:"$GROUP" "$CONF/schoolgate.toml"
chmod 0640 "$CONF/schoolgate.toml"

# -- 4. the venv and the command on the PATH ------------------------------------------------------
install -d -m 0755 "$PREFIX"
# `python3 -m venv --help` works without python3-venv on Debian; only creating one tells.
if [ ! -x "$PREFIX/venv/bin/pip" ]; then
  if ! "$PY" -m venv "$PREFIX/venv" >/dev/null 2>&1; then
    say "python3 cannot create a venv: installing python3-venv"
    rm -rf "$PREFIX/venv"
    env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null
    "$PY" -m venv "$PREFIX/venv" || die "cannot create a venv even with python3-venv installed"
  fi
fi
# What was installed: the pins, the package metadata and every source file of this checkout.
stamp=$( { sha256sum constraints.txt pyproject.toml;
           find edge_config gateway drivers receiver simulators -name '*.py' -o -name '*.toml' \
             | LC_ALL=C sort | xargs sha256sum; } | sha256sum | cut -d' ' -f1)
if [ "$(cat "$PREFIX/.installed" 2>/dev/null || true)" != "$stamp" ]; then
  say "installing schoolgate and its pinned dependencies into $PREFIX/venv"
  "$PREFIX/venv/bin/pip" install -q --disable-pip-version-check -c constraints.txt .
  echo "$stamp" > "$PREFIX/.installed"
fi
install -m 0644 README.md "$PREFIX/README.md"
ln -sfn "$PREFIX/venv/bin/schoolgate" "$BIN/schoolgate"

# -- 5. secrets readable by the service user, and by nobody else -----------------------------------
# The gateway key and TLS keys must be 0600 (the loader refuses anything looser), so they belong
# to the service user; password files may be root:schoolgate 0640.
find "$CONF/keys" "$CONF/tls" -type f -name '*.key' -exec chown "$SERVICE_USER:$GROUP" {} + \
  -exec chmod 0600 {} +
find "$CONF/keys" -type f -name '*.pub' -exec chown root:"$GROUP" {} + -exec chmod 0644 {} +
find "$CONF/secrets" -type f -exec chown root:"$GROUP" {} + -exec chmod 0640 {} +

# -- 6. the unit ----------------------------------------------------------------------------------
install -m 0644 systemd/schoolgate.service "$UNIT_DIR/schoolgate.service"
config_ok=yes
"$PREFIX/venv/bin/schoolgate" check-config "$CONF/schoolgate.toml" >/dev/null 2>&1 || config_ok=no
if [ "$SYSTEMD" = yes ]; then
  systemctl daemon-reload
  # A unit an older policy left "failed" (start limit hit) would not start again by itself.
  systemctl reset-failed schoolgate.service 2>/dev/null || true
  systemctl enable schoolgate.service
  if [ "$config_ok" = yes ]; then
    systemctl restart schoolgate.service
    say "schoolgate is running: journalctl -u schoolgate -f"
  fi
else
  say "--no-systemd: unit written to $UNIT_DIR/schoolgate.service, not enabled"
fi

# -- 7. doctor ------------------------------------------------------------------------------------
if [ "$config_ok" = no ]; then
  say "the config does not check out yet: edit $CONF/schoolgate.toml, then run"
  say "  schoolgate check-config $CONF/schoolgate.toml"
fi
if [ "$DOCTOR" = yes ]; then
  if "$PREFIX/venv/bin/schoolgate" doctor --help >/dev/null 2>&1; then
    say "schoolgate doctor -c $CONF/schoolgate.toml"
    "$PREFIX/venv/bin/schoolgate" doctor -c "$CONF/schoolgate.toml" || true
  else
    say "this version has no 'schoolgate doctor' command yet: checked the config only"
    "$PREFIX/venv/bin/schoolgate" check-config "$CONF/schoolgate.toml" || true
  fi
fi
if [ "$config_ok" = no ] && [ "$SYSTEMD" = yes ]; then
  echo "fix the config above, then: systemctl start schoolgate" >&2
  exit 1
fi
exit 0
