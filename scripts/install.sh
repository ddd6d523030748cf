#!/usr/bin/env bash
# Install edgemed into ./.venv (created if missing). Usage: bash scripts/install.sh [--dev|--runtime]
#   (no flag)  what the README's workflows use (`edgemed demo`, the tour): edgemed[all] = the runtime
#              plus compress (torch, CPU build pinned; onnx; NNCF; torch-pruning), openvino and report
#   --dev      plus nnU-Net v2 teachers and the test tools (what CI runs: .ci/run)
#   --runtime  the torch-free device install: numpy + onnxruntime, io, signatures (no torch). It adds
#              to an existing .venv and removes nothing; use a fresh one to see a runtime-only install.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check)
# constraints.txt pins torch so no dependency can swap in a multi-GB CUDA build.
# It goes in the same pip command as the packages: a separate, earlier torch install does not stop a
# later dependency from asking for another build.
case "${1:-}" in
  --dev)
    "${PIP[@]}" -c constraints.txt -e ".[dev]"
    # nnunetv2 -> dynamic-network-architectures -> timm -> torchvision; torchvision does not work
    # beside the pinned CPU torch, and no code path edgemed uses needs timm, so skip those deps.
    "${PIP[@]}" -c constraints.txt --no-deps -r requirements/nnunet-nodeps.txt
    # The DICOM node's tests (tests/serve) run against a real PACS: Orthanc and its DICOMweb plugin.
    if command -v apt-get >/dev/null && ! command -v Orthanc >/dev/null && [ ! -x /usr/sbin/Orthanc ]; then
      if [ "$(id -u)" = 0 ]; then
        # A fresh machine may have no package lists yet: update them once if the first try fails.
        apt_orthanc() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                          orthanc orthanc-dicomweb >/dev/null 2>&1; }
        apt_orthanc || { apt-get update -qq >/dev/null 2>&1 && apt_orthanc; } \
          || echo "note: could not install orthanc (apt-get failed); the DICOM node tests (tests/serve) will skip" >&2
      else
        echo "note: orthanc is not installed and installing it needs root; the DICOM node tests (tests/serve) will skip" >&2
      fi
    fi ;;
  --runtime)
    "${PIP[@]}" -c constraints.txt -e ".[runtime]" ;;
  "")
    "${PIP[@]}" -c constraints.txt -e ".[all]" ;;
  *)
    echo "usage: bash scripts/install.sh [--dev|--runtime]" >&2
    exit 2 ;;
esac
.venv/bin/edgemed --version
