"""How close does the INT8 student come to this host's INT8 ceiling? Peaks and achieved rates, one run.

Peaks (`edgemed.measure.peak_conv_gops`): one dense 3x3 conv (256 → 256 channels, 56 x 56), INT8
(QDQ) and FP32, on OpenVINO and ONNX Runtime; plus numpy's FP32 matmul. Achieved: the student
bundles on 16-slice batches of their real input size, ops counted from the ONNX graph (1 MAC = 2
ops). Every measurement is interleaved over rounds (best of each) so machine noise hits all alike.

    .venv/bin/python benchmarks/suite/int8_peak.py [--fp32 BUNDLE] [--int8 BUNDLE] [--size H W]

Default bundles: runs/prune_liver/pruned_kd.edgemed (benchmarks/suite/prune_liver.py) and its INT8 build
runs/prune_liver/pruned_kd_int8.edgemed (`edgemed quantize`, benchmarks/run_suite.py's quantize_pruned_liver).

Writes benchmarks/results/int8_peak.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import RESULTS, ROOT, config_from_args, write_result  # noqa: E402

OUT = RESULTS / "int8_peak.json"


def _openvino_layers(model_path: Path, name: str, x: np.ndarray, repeats: int = 5) -> dict[str, object]:
    """Where the INT8 student's time goes in OpenVINO: per-layer times (PERF_COUNT), by kind and kernel."""
    import openvino as ov

    core = ov.Core()
    compiled = core.compile_model(core.read_model(str(model_path)), "CPU", {"PERF_COUNT": "YES"})
    request = compiled.create_infer_request()
    request.infer({name: x})
    totals: dict[str, float] = {}
    for _ in range(repeats):
        request.infer({name: x})
        for info in request.get_profiling_info():
            key = f"{info.node_type}|{info.exec_type}|{info.node_name}"
            totals[key] = totals.get(key, 0.0) + info.real_time.total_seconds() * 1e3 / repeats
    total = sum(totals.values()) or 1.0
    by_type: dict[str, float] = {}
    by_kernel: dict[str, float] = {}
    for key, ms in totals.items():
        node_type, exec_type, _ = key.split("|", 2)
        by_type[node_type] = by_type.get(node_type, 0.0) + ms
        by_kernel[exec_type] = by_kernel.get(exec_type, 0.0) + ms
    top = sorted(totals.items(), key=lambda kv: -kv[1])[:12]
    int8_conv = sum(ms for k, ms in totals.items() if k.startswith("Convolution|") and "I8" in k.split("|")[1])
    return {
        "total_ms_per_batch": round(total, 2),
        "share_by_layer_type": {k: round(v / total, 3) for k, v in sorted(by_type.items(), key=lambda kv: -kv[1])},
        "share_by_kernel": {k: round(v / total, 3) for k, v in sorted(by_kernel.items(), key=lambda kv: -kv[1])[:10]},
        "share_in_int8_convolutions": round(int8_conv / total, 3),
        "top_layers_ms": [{"layer": k.split("|", 2)[2], "type": k.split("|")[0], "kernel": k.split("|")[1],
                           "ms": round(ms, 3)} for k, ms in top],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fp32", type=Path, default=ROOT / "runs" / "prune_liver" / "pruned_kd.edgemed")
    parser.add_argument("--int8", type=Path, default=ROOT / "runs" / "prune_liver" / "pruned_kd_int8.edgemed")
    parser.add_argument("--size", type=int, nargs=2, default=[128, 112], metavar=("H", "W"),
                        help="slice size the student sees (the liver CT's body crop at 3 mm: 128 x 112)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    from edgemed.measure import count_flops, host_facts, peak_conv_gops, peak_matmul_gflops
    from edgemed.runtime import OnnxBundle, open_session

    fp32, int8 = OnnxBundle.load(args.fp32), OnnxBundle.load(args.int8)
    if int8.precision != "int8":
        raise SystemExit(f"{args.int8} is {int8.precision}, not an INT8 bundle (edgemed quantize keeps FP32 when INT8 "
                         "does not win).")
    name = fp32.inputs[0].name
    x = np.random.default_rng(0).random((16, fp32.preprocess.in_channels, *args.size), dtype=np.float32)
    ops = {label: count_flops(b.model_path, {name: x.shape}).flops for label, b in (("fp32", fp32), ("int8", int8))}
    sessions = {"student_fp32_ort": open_session("ort", fp32.model_path),
                "student_fp32_openvino": open_session("openvino", fp32.model_path),
                "student_int8_openvino": open_session("openvino", int8.model_path)}
    peaks: dict[str, list[float]] = {k: [] for k in ("int8_openvino", "fp32_openvino", "int8_ort", "fp32_ort",
                                                      "fp32_numpy_matmul")}
    student_ms: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        s.run({name: x})
    for _ in range(args.rounds):
        for key in peaks:
            if key == "fp32_numpy_matmul":
                peaks[key].append(peak_matmul_gflops())
            else:
                precision, backend = key.split("_", 1)
                peaks[key].append(peak_conv_gops(backend, precision, repeats=3))
        for key, s in sessions.items():
            t0 = time.perf_counter()
            s.run({name: x})
            student_ms[key].append((time.perf_counter() - t0) * 1e3)
    for s in sessions.values():
        s.close()
    peak = {k: round(max(v), 1) for k, v in peaks.items()}
    best_ms = {k: round(min(v), 2) for k, v in student_ms.items()}
    achieved = {k: round(ops["int8" if "int8" in k else "fp32"] / (best_ms[k] / 1e3) / 1e9, 1) for k in best_ms}
    report = {
        "batch": list(x.shape), "gop_per_batch": {k: round(v / 1e9, 3) for k, v in ops.items()},
        "peak_gops": peak,
        "student_ms_per_batch": best_ms,
        "student_achieved_gops": achieved,
        "fraction_of_peak": {
            "int8_openvino_vs_int8_openvino_peak": round(achieved["student_int8_openvino"] / peak["int8_openvino"], 3),
            "fp32_openvino_vs_fp32_openvino_peak": round(achieved["student_fp32_openvino"] / peak["fp32_openvino"], 3),
            "fp32_ort_vs_fp32_ort_peak": round(achieved["student_fp32_ort"] / peak["fp32_ort"], 3),
        },
        "int8_over_fp32_peak_openvino": round(peak["int8_openvino"] / peak["fp32_openvino"], 2),
    }
    report["openvino_int8_layer_profile"] = _openvino_layers(int8.model_path, name, x)
    write_result(args.out, benchmark="int8_peak", script=__file__, config=config_from_args(args), metrics=report,
                 host=host_facts())
    print(json.dumps({k: report[k] for k in ("peak_gops", "student_achieved_gops", "fraction_of_peak")}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
