#!/usr/bin/env bash
# Put Prometheus's promtool into .venv/bin: taken from Debian's prometheus package
# without installing it (no daemon is started), to check and unit-test the alerts.
set -euo pipefail
DEST=${1:-.venv/bin/promtool}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
chmod 777 "$tmp"
apt-get download prometheus >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get download prometheus >/dev/null; }
dpkg-deb -x prometheus_*.deb x
cd - >/dev/null
install -m 755 "$tmp/x/usr/bin/promtool" "$DEST"
"$DEST" --version | head -1
