#!/usr/bin/env bash
# One-time check of the TensorRT path on an NVIDIA machine with TensorRT (a Jetson with JetPack 6,
# or an x86-64 GPU with NVIDIA's tensorrt wheel) and cuda-python (pip install 'edgemed[trt]').
#
# Runs the TensorRT tests — the `gpu`-marked ones build fp32 and fp16 engines from a tiny phantom
# student on this GPU and compare them with ONNX Runtime (max |Δlogit|, mask agreement, Dice),
# plus the CPU-side TensorRT tests — and writes a JSON summary with the host's facts (the shared
# result schema of benchmarks/_results.py).
#
# Usage:  bash benchmarks/suite/gpu_trt_check.sh [OUT.json]      (default: benchmarks/results/gpu_trt_check.json)
#         PYTHON=/path/to/python bash benchmarks/suite/gpu_trt_check.sh
# Exit status: 0 only if every gpu test ran and passed (a skipped gpu test means: not verified).
set -euo pipefail

cd "$(dirname "$0")/../.."
OUT="${1:-benchmarks/results/gpu_trt_check.json}"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

set +e
OMP_NUM_THREADS="${OMP_NUM_THREADS:-4}" "$PY" -m pytest -q -rs -p no:cacheprovider \
  tests/runtime/test_trt_backend.py tests/export/test_trt_build.py \
  --junitxml="$WORK/junit.xml" 2>&1 | tee "$WORK/pytest.log"
STATUS=${PIPESTATUS[0]}
set -e

"$PY" - "$WORK/junit.xml" "$WORK/pytest.log" "$OUT" "$STATUS" <<'EOF'
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from datetime import datetime, timezone

sys.path.insert(0, "benchmarks")
from _results import write_result  # noqa: E402

TEST_FILES = ["tests/runtime/test_trt_backend.py", "tests/export/test_trt_build.py"]
junit, log, out, status = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])


def version(module, dist=None):
    try:
        if dist is not None:
            from importlib.metadata import version as dist_version
            return dist_version(dist)
        return __import__(module).__version__
    except Exception as err:  # noqa: BLE001  any failure means "not usable here"
        return f"unavailable ({type(err).__name__}: {err})"


def nvidia_smi():
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=name,compute_cap,driver_version,memory.total",
                               "--format=csv,noheader"], capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError) as err:
        return f"unavailable ({err})"


def gpu_facts():
    try:
        import tensorrt
        from edgemed.runtime.backends.trt import import_cudart, local_gpu_facts
        return local_gpu_facts(tensorrt, import_cudart())
    except Exception as err:  # noqa: BLE001
        return {"error": f"{type(err).__name__}: {err}"}


# Which tests carry the gpu mark: the test ids pytest collects with -m gpu.
collected = subprocess.run([sys.executable, "-m", "pytest", "-q", "--collect-only", "-m", "gpu", "-p", "no:cacheprovider",
                            "tests/runtime/test_trt_backend.py"], capture_output=True, text=True).stdout
gpu_ids = {line.split("::", 1)[1] for line in collected.splitlines() if "::" in line}
tests = []
for case in ET.parse(junit).getroot().iter("testcase"):
    outcome, message = "passed", ""
    for tag in ("failure", "error", "skipped"):
        node = case.find(tag)
        if node is not None:
            outcome, message = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag], node.get("message", "")
    name = case.get("name", "")
    tests.append({"test": f"{case.get('classname', '')}::{name}", "gpu": name in gpu_ids, "outcome": outcome,
                  "seconds": float(case.get("time", 0)), "message": message[:500]})
gpu = [t for t in tests if t["gpu"]]
summary = {
    "verified": bool(gpu) and all(t["outcome"] == "passed" for t in gpu) and status == 0,
    "pytest_exit_status": status,
    "counts": {o: sum(t["outcome"] == o for t in tests) for o in ("passed", "failed", "error", "skipped")},
    "gpu_counts": {o: sum(t["outcome"] == o for t in gpu) for o in ("passed", "failed", "error", "skipped")},
    "tests": tests,
}
host = {"utc": datetime.now(timezone.utc).isoformat(timespec="seconds"), "nvidia_smi": nvidia_smi(), "gpu": gpu_facts(),
        "tensorrt": version("tensorrt"), "cuda_python": version("cuda", "cuda-python"),
        "onnxruntime": version("onnxruntime"),
        "jetson_release": open("/etc/nv_tegra_release").read().strip() if os.path.exists("/etc/nv_tegra_release")
        else None}
config = {"test_files": TEST_FILES, "python": sys.executable, "out": out,
          "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "4")}  # the default the pytest line above uses
write_result(out, benchmark="gpu_trt_check", script="benchmarks/suite/gpu_trt_check.sh", config=config,
             metrics=summary, host=host)
print(f"wrote {out}: verified={summary['verified']} gpu tests {summary['gpu_counts']}")
sys.exit(0 if summary["verified"] else 1)
EOF
