#!/usr/bin/env bash
# Install schoolgate as a systemd service on a Debian or Raspberry Pi OS gateway box.
#   sudo systemd/install.sh            install or upgrade, then (re)start the service
# It creates the `schoolgate` system user, a virtual environment in /opt/schoolgate/venv from
# this checkout (pinned by constraints.txt), /etc/schoolgate with the example config when none
# exists, and the unit. Nothing is downloaded at run time; only this install step uses PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" -eq 0 ] || { echo "run as root (sudo $0)" >&2; exit 1; }

PREFIX=/opt/schoolgate
CONF=/etc/schoolgate
PY=${PYTHON:-python3}

"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { echo "Python 3.11+ needed" >&2; exit 1; }
"$PY" -m venv --help >/dev/null 2>&1 || apt-get install -y -qq python3-venv

id -u schoolgate >/dev/null 2>&1 || useradd --system --home-dir /var/lib/schoolgate \
  --shell /usr/sbin/nologin --user-group schoolgate
usermod -a -G dialout schoolgate

install -d -m 0755 "$PREFIX"
[ -x "$PREFIX/venv/bin/python" ] || "$PY" -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install -q --disable-pip-version-check -c constraints.txt .
install -m 0644 README.md "$PREFIX/README.md"

install -d -m 0750 -g schoolgate "$CONF"
install -d -m 0750 -g schoolgate "$CONF/secrets"
if [ ! -f "$CONF/schoolgate.toml" ]; then
  install -m 0640 -g schoolgate edge_config/examples/school-gate.toml "$CONF/schoolgate.toml"
  echo "installed an example config: edit $CONF/schoolgate.toml, put passwords in $CONF/secrets/"
fi

install -m 0644 systemd/schoolgate.service /etc/systemd/system/schoolgate.service
systemctl daemon-reload
# A unit the older policy left "failed" (start limit hit) would not start again by itself.
systemctl reset-failed schoolgate.service 2>/dev/null || true
if "$PREFIX/venv/bin/schoolgate" check-config "$CONF/schoolgate.toml"; then
  systemctl enable --now schoolgate.service
  systemctl restart schoolgate.service
  echo "schoolgate is running: journalctl -u schoolgate -f"
else
  systemctl enable schoolgate.service
  echo "fix the config above, then: systemctl start schoolgate" >&2
  exit 1
fi
