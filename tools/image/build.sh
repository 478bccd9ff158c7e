#!/usr/bin/env bash
# Build the Elemta container image without Docker or a registry, from Debian's
# packages and the project's wheels - the same recipe as the Dockerfile:
#
#   1. wheels: `pip wheel` of this tree and its dependencies at the versions
#      requirements.lock pins, the ones the suite ran with (cp311)
#   2. root filesystem: mmdebstrap (bookworm, minbase, no recommends, no docs,
#      no perl: only usrmerge needed it, and the tree is merged already)
#      with python3 and a venv in /opt/elemta holding the wheels, user 10001
#   3. OCI image: umoci (layout build/image/oci, tag elemta:<version>), plus a
#      docker-archive tarball (skopeo) for `docker load`
#
# Usage: tools/image/build.sh [OUT_DIR]   (default build/image; root required)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:-$ROOT/build/image}
PY=${PYTHON:-$ROOT/.venv/bin/python}
VERSION=$("$PY" -c 'import tomllib;print(tomllib.load(open("'"$ROOT"'/pyproject.toml","rb"))["project"]["version"])')
TAG=elemta:$VERSION

for tool in mmdebstrap umoci skopeo; do
  command -v "$tool" >/dev/null || { apt-get update -q >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -q mmdebstrap umoci skopeo >/dev/null; break; }
done

rm -rf "$OUT"
mkdir -p "$OUT/wheels"
echo "== wheels"
"$PY" -m pip wheel -q -c "$ROOT/requirements.lock" --wheel-dir "$OUT/wheels" "$ROOT"

echo "== root filesystem (mmdebstrap)"
mmdebstrap --mode=root --variant=minbase \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --include=usr-is-merged,python3,python3-venv,ca-certificates,tzdata \
  --customize-hook='copy-in "'"$OUT"'/wheels" /tmp' \
  --customize-hook='chroot "$1" python3 -m venv /opt/elemta' \
  --customize-hook='chroot "$1" /opt/elemta/bin/pip install -q --no-index --no-compile --find-links /tmp/wheels elemta' \
  --customize-hook='chroot "$1" /opt/elemta/bin/python -m compileall -q /opt/elemta/lib' \
  --customize-hook='chroot "$1" /opt/elemta/bin/pip uninstall -q -y pip setuptools' \
  --customize-hook='rm -f "$1"/opt/elemta/bin/nats-server' \
  --customize-hook='chroot "$1" env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q usrmerge perl libperl5.36 perl-modules-5.36 libfile-find-rule-perl libnumber-compare-perl libtext-glob-perl >/dev/null' \
  --customize-hook='rm -rf "$1"/tmp/wheels "$1"/var/cache/apt/* "$1"/var/lib/apt/lists/*' \
  --customize-hook='chroot "$1" groupadd -g 10001 elemta' \
  --customize-hook='chroot "$1" useradd -u 10001 -g 10001 -M -d /var/lib/elemta -s /usr/sbin/nologin elemta' \
  --customize-hook='mkdir -p "$1"/var/lib/elemta "$1"/etc/elemta && chown 10001:10001 "$1"/var/lib/elemta' \
  --customize-hook='ln -s /opt/elemta/bin/elemta "$1"/usr/local/bin/elemta' \
  bookworm "$OUT/rootfs"

echo "== OCI image (umoci)"
umoci init --layout "$OUT/oci"
umoci new --image "$OUT/oci:$VERSION"
umoci unpack --image "$OUT/oci:$VERSION" "$OUT/bundle"
rmdir "$OUT/bundle/rootfs" 2>/dev/null || rm -rf "$OUT/bundle/rootfs"
mv "$OUT/rootfs" "$OUT/bundle/rootfs"
umoci repack --image "$OUT/oci:$VERSION" "$OUT/bundle"
umoci config --image "$OUT/oci:$VERSION" \
  --config.user 10001:10001 \
  --config.entrypoint /opt/elemta/bin/elemta \
  --config.cmd --help \
  --config.workingdir /var/lib/elemta \
  --config.env PATH=/opt/elemta/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  --config.env PYTHONDONTWRITEBYTECODE=1 \
  --config.env PYTHONUNBUFFERED=1 \
  --config.exposedports 2525/tcp --config.exposedports 2587/tcp --config.exposedports 2465/tcp \
  --config.exposedports 8025/tcp \
  --config.label org.opencontainers.image.title=elemta \
  --config.label "org.opencontainers.image.version=$VERSION" \
  --config.label org.opencontainers.image.licenses=Apache-2.0
umoci gc --layout "$OUT/oci"
mv "$OUT/bundle/rootfs" "$OUT/rootfs"
rm -rf "$OUT/bundle"
skopeo copy -q "oci:$OUT/oci:$VERSION" "docker-archive:$OUT/elemta-$VERSION.tar:$TAG"

blobs=$(du -sb "$OUT/oci/blobs" | cut -f1)
echo "image $TAG: OCI layout $OUT/oci ($((blobs / 1024 / 1024)) MiB compressed)," \
  "root filesystem $(du -sh "$OUT/rootfs" | cut -f1), docker-archive $OUT/elemta-$VERSION.tar"
