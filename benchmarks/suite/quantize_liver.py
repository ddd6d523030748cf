"""INT8 for the liver student on real CT: speed vs FP32 per backend, Dice vs the teacher and vs another patient.

FP32 bundle: a default liver student (benchmarks/studies/cross_scan.py --tag final, seed 0) exported to ONNX.
Calibration: slices of example_ct (the unlabeled training scan; stratified by the FP32 model's own
masks). Dice: vs TotalSegmentator's labels on example_ct (whole volume) and vs the semi-automatic
liver mask of dcmqi_ct3slice (another patient). Both flows run: NNCF → OpenVINO and ONNX Runtime's
quantize_static → ONNX Runtime; with `--flows ... nncf_qat_openvino nncf_ptq_plain_openvino`, also
NNCF quantization-aware training (distilled from the FP32 student) beside plain PTQ without accuracy
control, the baseline QAT improves on. Latency: the models timed side by side, interleaved, in one run
(16-slice batches), plus the whole-volume `segment` of the runtime for FP32 (ONNX Runtime) and the
chosen model.

    .venv/bin/python benchmarks/suite/quantize_liver.py [--bundle DIR] [--flows F ...] [--out JSON]

Reads the teacher's time from benchmarks/results/reference_teacher.json (benchmarks/suite/reference_teacher.py).
Writes benchmarks/results/quantize_liver.json (or --out).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import DATA, RESULTS, ROOT, config_from_args, result_metrics, write_result  # noqa: E402

OUT = RESULTS / "quantize_liver.json"
REFERENCE = RESULTS / "reference_teacher.json"


def _volume_ms(bundle: Path, backend: str, volume: object, repeats: int = 5) -> float:
    from edgemed import runtime

    with runtime.load(bundle, backend=backend) as seg:
        seg.segment(volume)  # warm-up
        times = []
        for _ in range(repeats):
            seg.segment(volume)
            times.append(seg.last_timings.total_ms)  # type: ignore[union-attr]
    return round(statistics.median(times), 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bundle", type=Path, default=ROOT / "runs" / "cross_scan" / "final_s0" / "bundle")
    parser.add_argument("--student", type=Path, default=None,
                        help="the checkpoint the bundle was exported from (QAT); default: BUNDLE/../student")
    parser.add_argument("--flows", nargs="+", default=["nncf_openvino", "ort_quantize_static"],
                        choices=["nncf_openvino", "ort_quantize_static", "nncf_qat_openvino", "nncf_ptq_plain_openvino"])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    import numpy as np

    from edgemed.compress import NncfInt8Config, NncfQatConfig, OrtInt8Config, quantize
    from edgemed.io import read_labels, read_volume

    ct = read_volume(DATA / "totalseg" / "example_ct.nii.gz")
    teacher = read_labels(DATA / "totalseg" / "example_seg_fast_force_split.nii.gz", like=ct).array
    other = read_volume(DATA / "dcmqi_ct3slice" / "ct")
    other_ref = (read_labels(DATA / "dcmqi_ct3slice" / "seg" / "liver.dcm", like=other).array > 0).astype(np.uint8) * 5
    flows: dict[str, object] = {}
    with tempfile.TemporaryDirectory() as tmp:
        student = args.student or args.bundle.parent / "student"
        configs = {"nncf_openvino": lambda: NncfInt8Config(), "ort_quantize_static": lambda: OrtInt8Config(),
                   "nncf_ptq_plain_openvino": lambda: NncfInt8Config(accuracy_control=False),
                   "nncf_qat_openvino": lambda: NncfQatConfig(student=student)}
        for label in args.flows:
            config = configs[label]()
            out = Path(tmp) / label
            result = quantize(args.bundle, [ct], config, out, validation_scans=[ct, other],
                              references=[teacher, other_ref])
            lat = result.latency_ms
            int8 = lat[f"int8_{config.backend}"]
            entry = result.to_json()
            entry["speedup_int8_vs_fp32_ort"] = round(lat["fp32_ort"] / int8, 2)
            entry["speedup_int8_vs_fp32_same_backend"] = round(lat[f"fp32_{config.backend}"] / int8, 2)
            entry["whole_volume_ms"] = {"fp32_ort": _volume_ms(args.bundle, "ort", ct),
                                        f"chosen_{result.chosen_precision}_{result.chosen_backend}":
                                            _volume_ms(out, result.chosen_backend, ct)}
            flows[label] = entry
            print(label, json.dumps({k: entry[k] for k in ("chosen_precision", "chosen_backend", "reason",
                                                            "speedup_int8_vs_fp32_ort",
                                                            "speedup_int8_vs_fp32_same_backend")}), file=sys.stderr)
    ref = result_metrics(REFERENCE) if REFERENCE.exists() else {}
    teacher_s = ref["teacher"].get("seconds_per_volume") if isinstance(ref.get("teacher"), dict) else None
    metrics = {"flows": flows, "reference_teacher_seconds_per_volume": teacher_s}
    out = write_result(args.out, benchmark="quantize_liver", script=__file__, config=config_from_args(args),
                       metrics=metrics)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
