#!/usr/bin/env bash
# Regenerates the Python stubs (gen/) and Envoy's descriptor set from protos/. Deterministic, so CI
# can regenerate and fail on any drift (`make check-protos`).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
OUT=gen
rm -rf "$OUT/hybridinference"
mkdir -p "$OUT" deploy/envoy
mapfile -t PROTOS < <(cd protos && find hybridinference -name '*.proto' | LC_ALL=C sort)
"$PY" -m grpc_tools.protoc \
  -I protos -I third_party/googleapis \
  --python_out="$OUT" --grpc_python_out="$OUT" \
  --mypy_out="$OUT" --mypy_grpc_out="$OUT" \
  "${PROTOS[@]}"
# Envoy's transcoder needs every import in the set, and the google.rpc detail types so that
# convert_grpc_status can print error details (BadRequest, ErrorInfo, RetryInfo) as JSON.
"$PY" -m grpc_tools.protoc \
  -I protos -I third_party/googleapis \
  --include_imports \
  --descriptor_set_out=deploy/envoy/hybridinference.pb \
  "${PROTOS[@]}" google/rpc/error_details.proto google/rpc/status.proto
find "$OUT/hybridinference" -type d -exec touch {}/__init__.py \;
touch "$OUT/hybridinference/py.typed"
