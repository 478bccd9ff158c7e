#!/usr/bin/env bash
# Regenerate the gRPC/protobuf modules from proto/ into common/elemta/rpc/.
# Generated code lives only there; never edit it by hand. The generator is the
# grpcio-tools version pinned in pyproject.toml (the dev extra).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=common
rm -rf "$OUT/elemta/rpc"
mkdir -p "$OUT"
find proto -name '*.proto' -print0 | xargs -0 "$PY" -m grpc_tools.protoc \
  -Iproto --python_out="$OUT" --pyi_out="$OUT" --grpc_python_out="$OUT"
# Regular packages so that mypy and import-linter see them; typed (PEP 561).
find "$OUT/elemta/rpc" -type d -exec touch {}/__init__.py \;
touch "$OUT/elemta/rpc/py.typed"
