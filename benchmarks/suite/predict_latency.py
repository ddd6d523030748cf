"""Predicted vs measured latency on this CPU: every zoo student and the reference teacher, ONNX Runtime and
OpenVINO, FP32 and INT8.

Measured: median of interleaved runs (2D students: a batch of 16 slices of 9 x 128 x 112, the liver
student's input at 3 mm; the teacher: one 128^3 window of TotalSegmentator's nnU-Net PlainConvUNet,
the reference of benchmarks/suite/reference_teacher.py). INT8 graphs: NNCF PTQ for OpenVINO, ONNX
Runtime's quantize_static for ONNX Runtime (weights are random: latency does not depend on them).
Predicted: `edgemed.measure.predict_latency` with this host's measured profile (peaks, bandwidth)
and a calibration per (backend, precision) fitted *leaving the predicted model out* — so every
prediction is for a model the calibration has never seen.

    .venv/bin/python benchmarks/suite/predict_latency.py [--repeats 5] [--no-teacher] [--reuse]

Models and measurements are kept in runs/predict_latency/ (`--reuse` predicts again from them
without re-measuring). A smaller 3D nnU-Net (half the features, 96^3 window) and a wider MobileNet-style
student join the pool, so that every kind of convolution (dense 2D, 3D, depthwise, transposed)
still has a measured example when a model is left out; their pairs are reported too.

Writes benchmarks/results/predict_latency.json, and the calibrations fitted on all models to
src/edgemed/measure/calibrations/calibration_host_{backend}_{precision}.json: edgemed ships them as
package data (`edgemed.measure.load_calibration("host_ort_int8")`), so a rerun updates what users get.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import RESULTS, ROOT, config_from_args, write_result  # noqa: E402

OUT = RESULTS / "predict_latency.json"
#: Package data of edgemed.measure: the file format is `Calibration.to_json()`, what `load_calibration` reads.
CALIBRATIONS = ROOT / "src" / "edgemed" / "measure" / "calibrations"
SLICE = (16, 9, 128, 112)
WINDOW = (1, 1, 128, 128, 128)
WINDOW_SMALL = (1, 1, 96, 96, 96)
ASKED = {"unet2d", "mobile_unet2d", "res_unet2d", "reference_teacher_3d"}

STUDENTS = {  # name → (zoo arch, kwargs)
    "unet2d": ("unet2d", {}),
    "unet2d_half": ("unet2d", {"widths": [8, 16, 32, 64, 128]}),
    "mobile_unet2d": ("mobile_unet2d", {}),
    "mobile_unet2d_wide": ("mobile_unet2d", {"widths": [16, 24, 32, 48, 80], "expand": 4}),
    "res_unet2d": ("res_unet2d", {}),
    "res_unet2d_half": ("res_unet2d", {"widths": [8, 16, 32, 64, 80]}),
}


def _export(torch, net, shape, path: Path) -> Path:  # type: ignore[no-untyped-def]
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(net.eval(), (torch.zeros(*shape),), str(path), opset_version=17, dynamo=False,
                          input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    return path


def _quantize(fp32: Path, shape: tuple[int, ...], tmp: Path) -> dict[str, Path]:
    import nncf
    import onnx
    from onnxruntime import quantization as q

    rng = np.random.default_rng(0)
    calib = [rng.random((1, *shape[1:]), dtype=np.float32) for _ in range(4)]
    model = onnx.load(str(fp32))
    nncf_path = tmp / f"{fp32.stem}_nncf.onnx"
    onnx.save(nncf.quantize(model, nncf.Dataset(calib, lambda x: {"image": x}), subset_size=len(calib),
                            preset=nncf.QuantizationPreset.PERFORMANCE), str(nncf_path))

    class Reader(q.CalibrationDataReader):  # type: ignore[misc]
        def __init__(self) -> None:
            self.it = iter(calib)

        def get_next(self):  # type: ignore[no-untyped-def]
            x = next(self.it, None)
            return None if x is None else {"image": x}

    ort_path = tmp / f"{fp32.stem}_ortq.onnx"
    q.quantize_static(str(fp32), str(ort_path), Reader(), quant_format=q.QuantFormat.QDQ, per_channel=True,
                      activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8)
    return {"openvino": nncf_path, "ort": ort_path}


def _measure(args, torch, create_student, StudentSpec, open_session,  # type: ignore[no-untyped-def]
             skip: set[str]) -> list[dict[str, object]]:
    from edgemed.measure import time_interleaved

    work: Path = args.work
    models: dict[str, tuple[Path, tuple[int, ...]]] = {}
    for name, (arch, kwargs) in STUDENTS.items():
        if name in skip:
            continue
        net = create_student(StudentSpec(arch=arch, in_channels=SLICE[1], num_classes=2, kwargs=kwargs))
        models[name] = (_export(torch, net, SLICE, work / f"{name}.onnx"), SLICE)
    if not args.no_teacher:
        from reference_teacher import TEACHER_FEATURES, build_teacher

        if "reference_teacher_3d" not in skip:
            models["reference_teacher_3d"] = (_export(torch, build_teacher(), WINDOW, work / "teacher.onnx"), WINDOW)
        if "nnunet_3d_half_96" not in skip:
            small = build_teacher(features=tuple(f // 2 for f in TEACHER_FEATURES))
            models["nnunet_3d_half_96"] = (_export(torch, small, WINDOW_SMALL, work / "teacher_half.onnx"),
                                           WINDOW_SMALL)
    out: list[dict[str, object]] = []
    for name, (fp32, shape) in models.items():
        print(f"quantizing and timing {name}", file=sys.stderr)
        int8 = _quantize(fp32, shape, work)
        variants = {("ort", "fp32"): fp32, ("openvino", "fp32"): fp32, ("ort", "int8"): int8["ort"],
                    ("openvino", "int8"): int8["openvino"]}
        x = np.random.default_rng(1).random(shape, dtype=np.float32)
        sessions = {k: open_session(k[0], path) for k, path in variants.items()}
        times = time_interleaved(sessions, {"image": x}, args.repeats)  # noise hits every variant alike
        for s in sessions.values():
            s.close()
        for (backend, precision), path in variants.items():
            out.append({"model": name, "backend": backend, "precision": precision, "path": str(path),
                        "shape": list(shape), "measured_ms": round(min(times[(backend, precision)]), 3)})
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--no-teacher", action="store_true", help="skip the 3D reference teacher (slow)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "predict_latency")
    parser.add_argument("--reuse", action="store_true", help="reuse the models and times in --work")
    parser.add_argument("--calibrations", type=Path, default=CALIBRATIONS,
                        help="where the calibration_host_*.json go [default: edgemed's package data]")
    args = parser.parse_args()
    import torch

    from edgemed.artifacts import atomic_file
    from edgemed.measure import fit_calibration, graph_cost, host_profile, predict_latency
    from edgemed.models import StudentSpec, create_student
    from edgemed.profiles import TargetProfile
    from edgemed.runtime import open_session

    args.work.mkdir(parents=True, exist_ok=True)
    # The host's peaks are measured with the runs and kept with them: --reuse predicts from the same
    # profile, so it reproduces the numbers instead of refitting to a fresh, slightly different peak.
    host_file = args.work / "host_profile.json"
    if args.reuse and host_file.exists():
        raw = json.loads(host_file.read_text())
        host = TargetProfile(**{**raw, "precisions": frozenset(raw["precisions"])})
    else:
        host = host_profile()
        host_file.write_text(json.dumps(host.to_json(), indent=1) + "\n")
    print(f"host profile: {json.dumps(host.to_json()['peak_tops'])} TOPS, {host.memory_bandwidth_gbs} GB/s",
          file=sys.stderr)
    measured_file = args.work / "measured.json"
    measured = json.loads(measured_file.read_text()) if args.reuse and measured_file.exists() else []
    done = {m["model"] for m in measured}
    new = _measure(args, torch, create_student, StudentSpec, open_session, skip=done)
    if new:
        measured += new
        measured_file.write_text(json.dumps(measured, indent=1) + "\n")
    pairs: list[dict[str, object]] = []
    for m in measured:
        shape = tuple(m["shape"])
        pairs.append({**{k: m[k] for k in ("model", "backend", "precision", "measured_ms")},
                      "cost": graph_cost(m["path"], {"image": shape}, m["precision"])})
    # Leave-one-model-out: calibrate on the other models of the same (backend, precision).
    calibrations = {}
    written: list[Path] = []
    args.calibrations.mkdir(parents=True, exist_ok=True)
    for pair in pairs:
        others = [(p["model"], p["cost"], p["measured_ms"]) for p in pairs if p["model"] != pair["model"]
                  and (p["backend"], p["precision"]) == (pair["backend"], pair["precision"])]
        cal = fit_calibration(others, host, pair["precision"], pair["backend"])  # type: ignore[arg-type]
        pred = predict_latency(pair["cost"], host, pair["precision"], cal)  # type: ignore[arg-type]
        pair["predicted_ms"] = round(pred.latency_ms, 3)
        pair["error"] = round(pred.latency_ms / float(pair["measured_ms"]) - 1, 3)  # type: ignore[arg-type]
    for key in {(p["backend"], p["precision"]) for p in pairs}:
        runs = [(p["model"], p["cost"], p["measured_ms"]) for p in pairs if (p["backend"], p["precision"]) == key]
        cal = fit_calibration(runs, host, key[1], key[0])  # type: ignore[arg-type]
        calibrations[f"{key[0]}_{key[1]}"] = cal.to_json()
        path = args.calibrations / f"calibration_host_{key[0]}_{key[1]}.json"
        with atomic_file(path) as t:  # the bare Calibration.to_json(): load_calibration reads nothing else
            t.write_text(json.dumps(cal.to_json(), indent=1) + "\n")
        written.append(path)
    errors = [abs(float(p["error"])) for p in pairs]  # type: ignore[arg-type]
    # The pairs the issue asks about: every zoo student at its default size, and the reference teacher.
    asked = [abs(float(p["error"])) for p in pairs if p["model"] in ASKED]  # type: ignore[arg-type]
    table = [{k: v for k, v in p.items() if k != "cost"} for p in pairs]
    config = config_from_args(
        args, method="roofline per node (FLOPs, bytes) with host-measured peaks; efficiencies fitted per (backend, "
                     "precision) leaving the predicted model out",
        asked_models=sorted(ASKED), students=STUDENTS, slice_shape=SLICE, window_shape=WINDOW,
        window_small_shape=WINDOW_SMALL)
    report = {
        "host_profile": host.to_json(),
        "pairs": table,
        "asked_pairs": len(asked),
        "asked_within_15_percent": round(sum(e <= 0.15 for e in asked) / max(1, len(asked)), 3),
        "asked_within_30_percent": round(sum(e <= 0.30 for e in asked) / max(1, len(asked)), 3),
        "all_pairs": len(errors),
        "within_15_percent": round(sum(e <= 0.15 for e in errors) / len(errors), 3),
        "within_30_percent": round(sum(e <= 0.30 for e in errors) / len(errors), 3),
        "median_abs_error": round(statistics.median(errors), 3),
        "calibrations_on_all_models": calibrations,
        "calibration_files": written,
    }
    write_result(args.out, benchmark="predict_latency", script=__file__, config=config, metrics=report)
    for row in table:
        print(f"{row['model']:<22} {row['backend']:<9} {row['precision']:<5} measured {row['measured_ms']:>10.2f} ms  "
              f"predicted {row['predicted_ms']:>10.2f} ms  ({float(row['error']):+.0%})")  # type: ignore[arg-type]
    print(f"zoo students + reference teacher ({len(asked)} pairs): within ±30 % "
          f"{report['asked_within_30_percent']:.0%}, ±15 % {report['asked_within_15_percent']:.0%}; all {len(errors)} "
          f"pairs: ±30 % {report['within_30_percent']:.0%}, ±15 % {report['within_15_percent']:.0%}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
