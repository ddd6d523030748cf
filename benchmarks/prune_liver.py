"""50 % channel pruning + distillation fine-tune of the liver student, on real CT: speed and Dice.

Unpruned: a default liver student (benchmarks/cross_scan.py's seed 0). Pruned with torch-pruning
(DepGraph, L2 magnitude, 50 % of the channels of every layer but the head), then fine-tuned by
distillation with the unpruned student as the teacher (label-free) on example_ct, whose held-out
block stays held out. Dice vs TotalSegmentator on that block and vs dcmqi's liver mask (another
patient); speed: both exported to ONNX and timed side by side, interleaved, on ONNX Runtime (and
OpenVINO), 16-slice batches, plus whole-volume `segment`.

    .venv/bin/python benchmarks/prune_liver.py [--student DIR] [--epochs 60] [--lr 2e-3]

Writes benchmarks/results/prune_liver.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

from edgemed._atomic import atomic_file

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("EDGEMED_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "benchmarks" / "results" / "prune_liver.json"


def _dice(ckpt_dir: Path, holdout: tuple[int, int]) -> dict[str, float]:
    from edgemed.artifacts import StudentCheckpoint
    from edgemed.io import read_labels, read_volume
    from edgemed.metrics import dice
    from edgemed.models import load_student, predict_volume

    ckpt = StudentCheckpoint.load(ckpt_dir)
    net = load_student(ckpt)
    ct = read_volume(DATA / "totalseg" / "example_ct.nii.gz")
    ref = read_labels(DATA / "totalseg" / "example_seg_fast_force_split.nii.gz", like=ct).array == 5
    block = slice(holdout[0], holdout[1] + 1)
    pred = predict_volume(net, ct, ckpt.preprocess).argmax(0) == 1
    other = read_volume(DATA / "dcmqi_ct3slice" / "ct")
    other_ref = read_labels(DATA / "dcmqi_ct3slice" / "seg" / "liver.dcm", like=other).array > 0
    other_pred = predict_volume(net, other, ckpt.preprocess).argmax(0) == 1
    return {"heldout_vs_teacher": round(dice(pred[:, :, block], ref[:, :, block]), 4),
            "dcmqi_vs_reference": round(dice(other_pred, other_ref), 4)}


def _timing(bundles: dict[str, Path], repeats: int = 15) -> dict[str, float]:
    from edgemed.io import context_stack, prepare_volume, read_volume
    from edgemed.runtime import OnnxBundle
    from edgemed.runtime.backends import open_session

    ct = read_volume(DATA / "totalseg" / "example_ct.nii.gz")
    first = OnnxBundle.load(next(iter(bundles.values())))
    image, geom = prepare_volume(ct, first.preprocess)
    x = np.ascontiguousarray(context_stack(image, np.arange(40, 56), first.preprocess.context_slices,
                                          step=geom.context_step), dtype=np.float32)
    sessions = {f"{k}_{b}": open_session(b, OnnxBundle.load(p).model_path) for k, p in bundles.items()
                for b in ("ort", "openvino")}
    from edgemed.profiles import time_interleaved

    times = time_interleaved(sessions, {"image": x}, repeats)
    for s in sessions.values():
        s.close()
    return {k: round(statistics.median(v), 2) for k, v in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", type=Path, default=ROOT / "runs" / "cross_scan" / "final_s0" / "student")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--prune-head-inputs", action="store_true",
                        help="prune the layer feeding the head too (how prune_liver*.json were measured, "
                             "before keep_head_inputs became the default)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "prune_liver")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    from edgemed.artifacts import StudentCheckpoint
    from edgemed.compress import DistillConfig, PruneConfig, distill, prune
    from edgemed.export import to_onnx
    from edgemed.models.teachers import StudentTeacher

    base = StudentCheckpoint.load(args.student)
    holdout = tuple(base.metadata["validation"]["per_scan"][0]["holdout_slices"])
    pruned = prune(base, PruneConfig(ratio=args.ratio, keep_head_inputs=not args.prune_head_inputs), args.work / "pruned")
    recipe = {k: v for k, v in base.metadata["recipe"].items()}
    config = DistillConfig(organs=("liver",), preprocess=base.preprocess, epochs=args.epochs, lr=args.lr,
                           seed=int(recipe.get("seed", 0)))
    t0 = time.perf_counter()
    tuned = distill([DATA / "totalseg" / "example_ct.nii.gz"], config, args.work / "pruned_kd",
                    teacher=StudentTeacher(args.student), init=pruned)
    finetune_s = time.perf_counter() - t0
    bundles = {"unpruned": to_onnx(base, args.work / "unpruned.edgemed").path,
               "pruned_kd": to_onnx(tuned, args.work / "pruned_kd.edgemed").path}
    latency = _timing(bundles)
    dice = {"unpruned": _dice(args.student, holdout), "pruned_no_finetune": _dice(pruned.path, holdout),
            "pruned_kd": _dice(tuned.path, holdout)}
    report = {
        "benchmark": "prune_liver", "ratio": args.ratio, "importance": "magnitude", "finetune_epochs": args.epochs, "finetune_lr": args.lr,
        "finetune_seconds": round(finetune_s, 1), "holdout_slices": list(holdout),
        "parameters": pruned.metadata["pruning"]["parameters"], "macs": pruned.metadata["pruning"]["macs_at"],
        "dice": dice,
        "dice_drop_points_heldout": round(100 * (dice["unpruned"]["heldout_vs_teacher"]
                                                 - dice["pruned_kd"]["heldout_vs_teacher"]), 2),
        "latency_ms_16_slices": latency,
        "speedup_ort": round(latency["unpruned_ort"] / latency["pruned_kd_ort"], 2),
        "speedup_openvino": round(latency["unpruned_openvino"] / latency["pruned_kd_openvino"], 2),
        "host": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()},
    }
    with atomic_file(args.out) as tmp:
        tmp.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("dice", "speedup_ort", "speedup_openvino", "dice_drop_points_heldout")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
