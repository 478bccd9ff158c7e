#!/usr/bin/env bash
# Run the image's entry points inside its root filesystem (chroot, as the image's
# non-root user, read-only config), as a container runtime would: every
# `elemta serve <service> --help` and `elemta config check`.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-$ROOT/build/image}
RFS=$OUT/rootfs
[ -x "$RFS/opt/elemta/bin/elemta" ] || { echo "no image in $OUT: run make image" >&2; exit 1; }
run() {
  echo "+ elemta $*" >&2
  env -i PATH=/opt/elemta/bin:/usr/bin:/bin HOME=/var/lib/elemta \
    "$(command -v chroot)" --userspec=10001:10001 "$RFS" /opt/elemta/bin/elemta "$@"
}
# Every service's code imports in the image (the --help of a command may not).
env -i PATH=/usr/bin:/bin "$(command -v chroot)" --userspec=10001:10001 "$RFS" /opt/elemta/bin/python -c \
  "import elemta.ingress.service, elemta.policy.service, elemta.queue.service, elemta.delivery.service, elemta.api.app, elemta.operator.handlers"
for service in ingress policy queue delivery api operator; do
  run serve "$service" --help >/dev/null
done
cp "$ROOT/compose/elemta.toml" "$RFS/etc/elemta/elemta.toml"
run config check --config /etc/elemta/elemta.toml
rm -f "$RFS/etc/elemta/elemta.toml"
echo "image check passed"
