"""Reference teacher cost: a TotalSegmentator-class 3D nnU-Net vs the liver student, same CT, same run.

Teacher: nnU-Net 3d_fullres `PlainConvUNet` (dynamic-network-architectures) with TotalSegmentator
v2 "total" plans — 6 stages, features (32, 64, 128, 256, 320, 320), 3x3x3 kernels, strides
1,2,2,2,2,2, two convs per stage, InstanceNorm + LeakyReLU, 118 classes — random (seeded)
weights, exported to ONNX (opset 17, fixed 128^3 patch, dynamic batch) and run by nnU-Net-style
sliding window (step 0.5, Gaussian weighting sigma = patch/8, logits accumulated, argmax last) on
ONNX Runtime CPU over `example_ct.nii.gz` resampled to 1.5 mm. Weights do not change the cost.
When all windows would take longer than `--budget-s`, `--windows` of them are timed after one
warm-up and the window stage is extrapolated to the full count (`"extrapolated": true`).

Student: the liver student's whole-volume `segment` through `edgemed.runtime` on the original
3 mm CT, on ONNX Runtime and OpenVINO (1 warm-up, `--repeats` timed; median and p90), with its
`StageTimings` split into preprocess / inference / postprocess.

    .venv/bin/python benchmarks/suite/reference_teacher.py [--student runs/liver] [--windows 3] [--repeats 7]
    .venv/bin/python benchmarks/suite/reference_teacher.py --bundle runs/prune_liver/pruned_kd_int8.edgemed \
        --out benchmarks/results/reference_teacher_pruned_int8.json

Without `--student`, a quick liver student (3 epochs) is distilled first: `segment`'s time does
not depend on how well the student was trained. Writes benchmarks/results/reference_teacher.json.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import DATA, RESULTS, config_from_args, write_result  # noqa: E402

TOTALSEG = DATA / "totalseg"
OUT = RESULTS / "reference_teacher.json"

# TotalSegmentator v2 "total" 3d_fullres plans (nnU-Net PlainConvUNet).
TEACHER_FEATURES = (32, 64, 128, 256, 320, 320)
TEACHER_CLASSES = 118  # 117 structures + background
TEACHER_PATCH = (128, 128, 128)
TEACHER_SPACING_MM = (1.5, 1.5, 1.5)
STEP = 0.5  # nnU-Net's default tile_step_size
RATIO_TARGET, RATIO_GOAL, OVERHEAD_MAX = 20.0, 100.0, 0.15


def build_teacher(*, features: tuple[int, ...] = TEACHER_FEATURES, classes: int = TEACHER_CLASSES,
                  seed: int = 0) -> Any:
    """The TotalSegmentator-class PlainConvUNet with seeded random weights, in eval mode."""
    import torch
    from dynamic_network_architectures.architectures.unet import PlainConvUNet

    torch.manual_seed(seed)
    n = len(features)
    model = PlainConvUNet(
        input_channels=1, n_stages=n, features_per_stage=list(features), conv_op=torch.nn.Conv3d,
        kernel_sizes=[[3, 3, 3]] * n, strides=[[1, 1, 1]] + [[2, 2, 2]] * (n - 1),
        n_conv_per_stage=[2] * n, num_classes=classes, n_conv_per_stage_decoder=[2] * (n - 1),
        conv_bias=True, norm_op=torch.nn.InstanceNorm3d, norm_op_kwargs={"eps": 1e-5, "affine": True},
        dropout_op=None, dropout_op_kwargs=None, nonlin=torch.nn.LeakyReLU,
        nonlin_kwargs={"inplace": True}, deep_supervision=False,
    )
    return model.eval()


def export_teacher(model: Any, path: Path, patch: tuple[int, int, int]) -> Path:
    """ONNX opset 17 (TorchScript exporter), fixed patch, dynamic batch."""
    import torch

    dummy = torch.zeros((1, 1, *patch), dtype=torch.float32)
    with torch.no_grad():
        torch.onnx.export(model, (dummy,), str(path), opset_version=17, dynamo=False, input_names=["image"],
                          output_names=["logits"], dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}})
    return path


def window_starts(size: int, patch: int, step: float = STEP) -> list[int]:
    """nnU-Net's `compute_steps_for_sliding_window` along one axis (size already >= patch)."""
    if size <= patch:
        return [0]
    n = math.ceil((size - patch) / (patch * step)) + 1
    actual = (size - patch) / (n - 1)
    return [int(round(actual * i)) for i in range(n)]


def gaussian_weight(patch: tuple[int, ...], sigma_scale: float = 1 / 8) -> np.ndarray:
    """nnU-Net's importance map: a Gaussian (sigma = patch * sigma_scale), max 1, no zeros."""
    axes = []
    for p in patch:
        x = np.arange(p, dtype=np.float64) - (p - 1) / 2
        axes.append(np.exp(-0.5 * (x / (p * sigma_scale)) ** 2))
    g = np.einsum("i,j,k->ijk", *axes)
    g /= g.max()
    g[g == 0] = g[g != 0].min()
    return g.astype(np.float32)


def normalize_ct(array: np.ndarray) -> np.ndarray:
    """nnU-Net CTNormalization, roughly: clip to the 0.5-99.5 percentiles, then z-score."""
    lo, hi = np.percentile(array, [0.5, 99.5])
    x = np.clip(array, lo, hi)
    return ((x - x.mean()) / max(float(x.std()), 1e-8)).astype(np.float32)


def run_teacher(session: Any, volume: Any, *, patch: tuple[int, int, int], classes: int,
                max_windows: int, budget_s: float) -> dict[str, Any]:
    """Resample, normalize, slide, argmax; time each stage. Extrapolates the windows when over budget."""
    from edgemed.io import resample_to_spacing

    t_start = time.perf_counter()
    resampled = resample_to_spacing(volume, TEACHER_SPACING_MM, order="linear")
    image = normalize_ct(resampled.array)
    shape = image.shape
    pad = [(0, max(p - s, 0)) for s, p in zip(shape, patch)]
    if any(after for _, after in pad):
        image = np.pad(image, pad, mode="constant", constant_values=float(image.min()))
    padded = image.shape
    t_prep = time.perf_counter() - t_start

    boxes = [(a, b, c) for a in window_starts(padded[0], patch[0]) for b in window_starts(padded[1], patch[1])
             for c in window_starts(padded[2], patch[2])]
    gauss = gaussian_weight(patch)
    t0 = time.perf_counter()
    logits = np.zeros((classes, *padded), dtype=np.float32)
    weights = np.zeros(padded, dtype=np.float32)
    t_alloc = time.perf_counter() - t0

    def window(box: tuple[int, int, int]) -> tuple[float, float]:
        t = time.perf_counter()
        sl = tuple(slice(o, o + p) for o, p in zip(box, patch))
        x = np.ascontiguousarray(image[sl][None, None])
        a = time.perf_counter()
        out = session.run(["logits"], {"image": x})[0][0]
        b = time.perf_counter()
        out *= gauss
        logits[(slice(None), *sl)] += out
        weights[sl] += gauss
        return b - a, time.perf_counter() - b + (a - t)  # inference, everything else

    # Warm-up on the first window (not accumulated twice: its result is discarded by re-zeroing).
    t0 = time.perf_counter()
    window(boxes[0])
    warmup_s = time.perf_counter() - t0
    logits[...] = 0
    weights[...] = 0

    estimate = warmup_s * len(boxes)
    extrapolated = estimate > budget_s and max_windows < len(boxes)
    timed = boxes[:max_windows] if extrapolated else boxes
    infer, accum = [], []
    for box in timed:
        i, a = window(box)
        infer.append(i)
        accum.append(a)
    mean_window = (sum(infer) + sum(accum)) / len(timed)
    windows_s = mean_window * len(boxes)

    if extrapolated:  # windows never run leave zero weights; nnU-Net's division would see none
        weights[weights == 0] = 1.0
    t0 = time.perf_counter()
    logits /= weights  # (nnU-Net divides by the summed weights; argmax would not need it)
    labels = np.argmax(logits[(slice(None), *(slice(0, s) for s in shape))], axis=0).astype(np.uint8)
    t_final = time.perf_counter() - t0
    del logits, weights
    total_s = t_prep + t_alloc + windows_s + t_final
    return {
        "input_shape_1p5mm": list(shape),
        "padded_shape": list(padded),
        "patch": list(patch),
        "step": STEP,
        "windows_total": len(boxes),
        "windows_timed": len(timed),
        "extrapolated": extrapolated,
        "warmup_window_s": round(warmup_s, 3),
        "window_s_mean": round(mean_window, 3),
        "window_inference_s_mean": round(statistics.fmean(infer), 3),
        "window_accumulate_s_mean": round(statistics.fmean(accum), 3),
        "stages_s": {"resample_normalize_pad": round(t_prep, 3), "allocate": round(t_alloc, 3),
                     "windows": round(windows_s, 3), "normalize_argmax": round(t_final, 3)},
        "seconds_per_volume": round(total_s, 3),
        "labels_nonzero": int(np.count_nonzero(labels)),
    }


def time_student(bundle: Path, volume: Any, *, backend: str, threads: int | None, repeats: int) -> dict[str, Any]:
    """Whole-volume `segment`: 1 warm-up, then `repeats` timed calls; per-stage medians."""
    from edgemed import runtime

    with runtime.load(bundle, backend=backend, threads=threads) as seg:
        seg.segment(volume)
        wall, stages = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            mask = seg.segment(volume)
            wall.append((time.perf_counter() - t0) * 1e3)
            stages.append(seg.last_timings)
    med = {k: statistics.median(getattr(s, f"{k}_ms") for s in stages)
           for k in ("preprocess", "inference", "postprocess", "total")}
    overheads = [(s.total_ms - s.inference_ms) / s.total_ms for s in stages]
    return {
        "backend": backend,
        "repeats": repeats,
        "ms_median": round(statistics.median(wall), 2),
        "ms_p90": round(float(np.percentile(wall, 90)), 2),
        "ms_all": [round(w, 2) for w in wall],
        "stage_ms_median": {k: round(v, 2) for k, v in med.items()},
        "slices": stages[-1].slices,
        "batches": stages[-1].batches,
        "overhead_fraction_median": round(statistics.median(overheads), 4),
        "share_of_total": {k: round(med[k] / med["total"], 4) for k in ("preprocess", "inference", "postprocess")},
        "liver_voxels": int(np.count_nonzero(np.asarray(mask.array) == 5)),
    }


def quick_student(ct: Path, seg: Path, out: Path, threads: int | None) -> Path:
    from edgemed.compress import DistillConfig, distill

    config = DistillConfig(organs=("liver",), epochs=3, threads=threads)
    return Path(distill([ct], config, out, teacher_predictions=[seg], progress=False).path)


def benchmark(*, ct: Path, seg: Path, student: Path | None, work: Path, windows: int = 3, repeats: int = 7,
              bundle_dir: Path | None = None,
              threads: int | None = None, budget_s: float = 360.0, patch: tuple[int, int, int] = TEACHER_PATCH,
              features: tuple[int, ...] = TEACHER_FEATURES, classes: int = TEACHER_CLASSES,
              backends: tuple[str, ...] = ("ort", "openvino")) -> dict[str, Any]:
    """The whole measurement; returns the report dict (see the module docstring)."""
    import onnxruntime as ort

    from edgemed.export import OnnxExportConfig, to_onnx
    from edgemed.io import read_volume

    ort_threads = threads or os.cpu_count() or 1
    volume = read_volume(ct)

    # Student first (its distillation uses torch threads; the teacher then has the cores alone).
    t0 = time.perf_counter()
    if bundle_dir is not None:  # an existing bundle, e.g. pruned + INT8 from edgemed prune / quantize
        from edgemed.runtime import OnnxBundle

        bundle, student_dir, student_trained_s = OnnxBundle.load(bundle_dir), bundle_dir, None
    else:
        student_dir = student if student is not None else quick_student(ct, seg, work / "student", threads)
        student_trained_s = None if student is not None else round(time.perf_counter() - t0, 1)
        bundle = to_onnx(student_dir, work / "liver.edgemed", OnnxExportConfig(parity_volumes=(volume,)))

    model = build_teacher(features=features, classes=classes)
    params = sum(p.numel() for p in model.parameters())
    t0 = time.perf_counter()
    onnx_path = export_teacher(model, work / "teacher.onnx", patch)
    export_s = time.perf_counter() - t0
    del model
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = ort_threads
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    teacher = run_teacher(session, volume, patch=patch, classes=classes, max_windows=windows, budget_s=budget_s)
    del session
    teacher.update({"parameters": params, "onnx_mb": round(onnx_path.stat().st_size / 2**20, 1),
                    "export_s": round(export_s, 1), "ort_threads": ort_threads})

    students = {b: time_student(bundle.path, volume, backend=b, threads=threads, repeats=repeats) for b in backends}
    ratios = {b: round(teacher["seconds_per_volume"] * 1e3 / s["ms_median"], 1) for b, s in students.items()}
    return {
        "benchmark": "reference_teacher",
        "scan": f"{ct.name} {list(volume.array.shape)} at {[round(float(s), 3) for s in volume.spacing_mm]} mm",
        "teacher": {"model": "nnU-Net 3d_fullres PlainConvUNet (TotalSegmentator v2 total plans, random weights)",
                    "features": list(features), "classes": classes, "spacing_mm": list(TEACHER_SPACING_MM),
                    "runtime": f"onnxruntime {ort.__version__} CPUExecutionProvider", **teacher},
        "student": {"checkpoint": str(student_dir) if (student or bundle_dir) is not None
                    else "quick 3-epoch liver student", "precision": bundle.precision,
                    "distill_s": student_trained_s, "threads": threads, "backends": students},
        "ratio_teacher_over_student": ratios,
        "ratio_target": RATIO_TARGET,
        "ratio_goal": RATIO_GOAL,
        "ratio_pass": {b: r >= RATIO_TARGET for b, r in ratios.items()},
        "ratio_goal_pass": {b: r >= RATIO_GOAL for b, r in ratios.items()},
        "overhead_max": OVERHEAD_MAX,
        "overhead_pass": {b: s["overhead_fraction_median"] <= OVERHEAD_MAX for b, s in students.items()},
        "host": _host(ort_threads),
    }


def _host(threads: int) -> dict[str, Any]:
    import onnxruntime as ort

    try:
        import openvino as ov
        ov_version = ov.get_version()
    except ImportError:
        ov_version = None
    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {"python": platform.python_version(), "platform": platform.platform(), "machine": platform.machine(),
            "processor": platform.processor(), "cpus": os.cpu_count(),
            "cpus_available": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
            "onnxruntime": ort.__version__, "openvino": ov_version, "threads": threads, "loadavg_at_end": load}


def _table(report: dict[str, Any]) -> str:
    t = report["teacher"]
    rows = [f"teacher  {t['parameters'] / 1e6:.1f} M params  {t['windows_total']} windows of {t['patch']} "
            f"({t['windows_timed']} timed{', extrapolated' if t['extrapolated'] else ''})  "
            f"{t['seconds_per_volume']:.1f} s/volume  ({t['window_s_mean']:.2f} s/window)"]
    for b, s in report["student"]["backends"].items():
        sh = s["share_of_total"]
        rows.append(f"student  {b:<9}{s['ms_median']:8.1f} ms median  {s['ms_p90']:8.1f} ms p90  "
                    f"ratio {report['ratio_teacher_over_student'][b]:7.1f}x  overhead "
                    f"{s['overhead_fraction_median']:.1%} (pre {sh['preprocess']:.0%}, infer {sh['inference']:.0%}, "
                    f"post {sh['postprocess']:.0%})")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", type=Path, default=None, help="an existing liver student checkpoint dir")
    parser.add_argument("--windows", type=int, default=3, help="windows timed when extrapolating (>= 3)")
    parser.add_argument("--repeats", type=int, default=7, help="timed student segment calls (>= 5)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all cores)")
    parser.add_argument("--budget-s", type=float, default=360.0, help="run all windows if they fit in this")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--bundle", type=Path, default=None, help="time this bundle instead of exporting a student")
    args = parser.parse_args()
    if args.windows < 3 or args.repeats < 5:
        parser.error("--windows must be >= 3 and --repeats >= 5")
    ct, seg = TOTALSEG / "example_ct.nii.gz", TOTALSEG / "example_seg_fast_force_split.nii.gz"
    if not ct.exists():
        print(f"real data not found at {TOTALSEG}; set EDGEMED_DATA", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        report = benchmark(ct=ct, seg=seg, student=args.student, work=Path(tmp), windows=args.windows,
                           repeats=args.repeats, threads=args.threads, budget_s=args.budget_s,
                           bundle_dir=args.bundle)
    # benchmark() returns one flat dict (the smoke test reads it); the file splits it into the schema.
    host = report.pop("host")
    report.pop("benchmark")
    settings = {k: report.pop(k) for k in ("scan", "ratio_target", "ratio_goal", "overhead_max")}
    write_result(args.out, benchmark="reference_teacher", script=__file__, config=config_from_args(args, **settings),
                 metrics=report, host=host)
    print(_table(report))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
