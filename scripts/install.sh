#!/usr/bin/env bash
# Install edgemed into ./.venv (created if missing). Usage: bash scripts/install.sh [--dev]
#   (no flag)  the compressor: torch (CPU build pinned), onnx, onnxruntime, io libraries
#   --dev      plus nnU-Net v2 teachers and the test tools
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# constraints.txt pins torch so no dependency can swap in a multi-GB CUDA build.
if [ "${1:-}" = "--dev" ]; then
  "${PIP[@]}" -c constraints.txt -e ".[dev]"
  # nnunetv2 -> dynamic-network-architectures -> timm -> torchvision; torchvision does not work
  # beside the pinned CPU torch, and no code path edgemed uses needs timm, so skip those deps.
  "${PIP[@]}" -c constraints.txt --no-deps -r requirements/nnunet-nodeps.txt
else
  "${PIP[@]}" -c constraints.txt -e .
fi
.venv/bin/edgemed --version
