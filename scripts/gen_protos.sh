#!/usr/bin/env bash
# Regenerates the Python contracts and Envoy's descriptor set from protos/. Deterministic, so CI
# can regenerate and fail on any drift (`make check-protos`).
#
# The generated modules are installed inside the product package: protos/hybridinference/<area>/v1
# becomes services/hybridinference/<area>/v1 (`hybridinference.<area>.v1`), next to the service code
# of that area (`hybridinference.gateway` holds the gateway, `hybridinference.gateway.v1` its
# contract). Only the v1 folders are generated; everything else under services/ is hand-written.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
# OUT and DESCRIPTOR elsewhere: `python -m hybridinference.render --check` generates into a
# scratch directory and compares with what is committed.
OUT=${OUT:-services}
DESCRIPTOR=${DESCRIPTOR:-deploy/envoy/hybridinference.pb}
rm -rf "$OUT"/hybridinference/*/v1
mkdir -p "$OUT" "$(dirname "$DESCRIPTOR")"
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
  --descriptor_set_out="$DESCRIPTOR" \
  "${PROTOS[@]}" google/rpc/error_details.proto google/rpc/status.proto
for dir in "$OUT"/hybridinference/*/v1; do
  touch "$dir/__init__.py"
  # An area with a contract but no service code of its own (openai, provider) still needs to be a
  # package; the hand-written ones already are.
  [ -f "$dir/../__init__.py" ] || touch "$dir/../__init__.py"
done
