#!/usr/bin/env bash
# sslyze (the TLS scanner the TLS-level tests run) in a virtual environment of its
# own: it pins a cryptography older than Elemta's, so it cannot share .venv.
# Its command ends up at the given path (default .venv/bin/sslyze).
set -euo pipefail
DEST=${1:-.venv/bin/sslyze}
PYTHON=${PYTHON:-python3}
VERSION=6.3.1
ENV_DIR="$(dirname "$DEST")/../sslyze-env"
"$PYTHON" -m venv "$ENV_DIR"
"$ENV_DIR/bin/python" -m pip install -q "sslyze==$VERSION"
ln -sf "$(cd "$ENV_DIR/bin" && pwd)/sslyze" "$DEST"
"$DEST" --help >/dev/null
