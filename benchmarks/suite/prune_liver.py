"""50 % channel pruning + distillation fine-tune of the liver student, on real CT: speed and Dice.

Unpruned: a default liver student (benchmarks/studies/cross_scan.py --tag final, seed 0). Pruned with
torch-pruning (DepGraph, L2 magnitude, 50 % of the channels of every layer but the head), then fine-tuned
by distillation with the unpruned student as the teacher (label-free) on example_ct, whose held-out
block stays held out. Dice vs TotalSegmentator on that block and vs dcmqi's liver mask (another
patient); speed: both exported to ONNX and timed side by side, interleaved, on ONNX Runtime (and
OpenVINO), 16-slice batches.

    .venv/bin/python benchmarks/suite/prune_liver.py [--student DIR] [--epochs 60] [--lr 2e-3] [--prune-head-inputs]
    .venv/bin/python benchmarks/suite/prune_liver.py --seeds 0 1 2 3 4 --prune-head-inputs   # every seed's student

Writes benchmarks/results/prune_liver.json; with `--seeds`, each seed's student
(runs/cross_scan/final_s<seed>/student, work in <work>_s<seed>) and benchmarks/results/prune_liver_seeds.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import DATA, RESULTS, ROOT, config_from_args, write_result  # noqa: E402

OUT = RESULTS / "prune_liver.json"
OUT_SEEDS = RESULTS / "prune_liver_seeds.json"


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
    from edgemed.runtime import OnnxBundle, open_session

    ct = read_volume(DATA / "totalseg" / "example_ct.nii.gz")
    first = OnnxBundle.load(next(iter(bundles.values())))
    image, geom = prepare_volume(ct, first.preprocess)
    x = np.ascontiguousarray(context_stack(image, np.arange(40, 56), first.preprocess.context_slices,
                                          step=geom.context_step), dtype=np.float32)
    sessions = {f"{k}_{b}": open_session(b, OnnxBundle.load(p).model_path) for k, p in bundles.items()
                for b in ("ort", "openvino")}
    from edgemed.measure import time_interleaved

    times = time_interleaved(sessions, {"image": x}, repeats)
    for s in sessions.values():
        s.close()
    return {k: round(statistics.median(v), 2) for k, v in times.items()}


def run_one(student: Path, work: Path, args: argparse.Namespace) -> dict[str, object]:
    """Prune `student`, fine-tune it, export both and measure them; the metrics of one student."""
    from edgemed.artifacts import StudentCheckpoint
    from edgemed.compress import DistillConfig, PruneConfig, distill, prune
    from edgemed.export import to_onnx
    from edgemed.models.teachers import StudentTeacher

    base = StudentCheckpoint.load(student)
    holdout = tuple(base.metadata["validation"]["per_scan"][0]["holdout_slices"])
    pruned = prune(base, PruneConfig(ratio=args.ratio, keep_head_inputs=not args.prune_head_inputs), work / "pruned")
    recipe = {k: v for k, v in base.metadata["recipe"].items()}
    config = DistillConfig(organs=("liver",), preprocess=base.preprocess, epochs=args.epochs, lr=args.lr,
                           seed=int(recipe.get("seed", 0)))
    t0 = time.perf_counter()
    tuned = distill([DATA / "totalseg" / "example_ct.nii.gz"], config, work / "pruned_kd",
                    teacher=StudentTeacher(student), init=pruned)
    finetune_s = time.perf_counter() - t0
    bundles = {"unpruned": to_onnx(base, work / "unpruned.edgemed").path,
               "pruned_kd": to_onnx(tuned, work / "pruned_kd.edgemed").path}
    latency = _timing(bundles)
    dice = {"unpruned": _dice(student, holdout), "pruned_no_finetune": _dice(pruned.path, holdout),
            "pruned_kd": _dice(tuned.path, holdout)}
    return {
        "finetune_seconds": round(finetune_s, 1), "holdout_slices": list(holdout),
        "parameters": pruned.metadata["pruning"]["parameters"], "macs": pruned.metadata["pruning"]["macs_at"],
        "dice": dice,
        "dice_drop_points_heldout": round(100 * (dice["unpruned"]["heldout_vs_teacher"]
                                                 - dice["pruned_kd"]["heldout_vs_teacher"]), 2),
        "latency_ms_16_slices": latency,
        "speedup_ort": round(latency["unpruned_ort"] / latency["pruned_kd_ort"], 2),
        "speedup_openvino": round(latency["unpruned_openvino"] / latency["pruned_kd_openvino"], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", type=Path, default=ROOT / "runs" / "cross_scan" / "final_s0" / "student")
    parser.add_argument("--seeds", type=int, nargs="+", default=None,
                        help="prune each of these seeds' students (runs/cross_scan/final_s<seed>/student) instead")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--ratio", type=float, default=0.5)
    parser.add_argument("--prune-head-inputs", action="store_true",
                        help="prune the layer feeding the head too (how prune_liver*.json were measured, "
                             "before keep_head_inputs became the default)")
    parser.add_argument("--work", type=Path, default=ROOT / "runs" / "prune_liver")
    parser.add_argument("--out", type=Path, default=None, help="[default: results/prune_liver.json, or "
                                                                "prune_liver_seeds.json with --seeds]")
    args = parser.parse_args()
    config = config_from_args(args, importance="magnitude")
    if args.seeds is None:
        metrics = run_one(args.student, args.work, args)
        out = write_result(args.out or OUT, benchmark="prune_liver", script=__file__, config=config, metrics=metrics)
        print(json.dumps({k: metrics[k] for k in ("dice", "speedup_ort", "speedup_openvino",
                                                   "dice_drop_points_heldout")}))
        print(f"wrote {out}")
        return 0
    runs: list[dict[str, object]] = []
    for seed in args.seeds:
        student = ROOT / "runs" / "cross_scan" / f"final_s{seed}" / "student"
        one = run_one(student, args.work.with_name(f"{args.work.name}_s{seed}"), args)
        runs.append({"seed": seed, "student": student, **{k: one[k] for k in (
            "dice", "dice_drop_points_heldout", "speedup_ort", "speedup_openvino", "parameters", "finetune_seconds")}})
        print(json.dumps(runs[-1], default=str), file=sys.stderr)
        dice = [r["dice"] for r in runs]
        metrics = {"runs": runs,
                   "drop_points_within_1": sum(float(r["dice_drop_points_heldout"]) <= 1.0 for r in runs),  # type: ignore[arg-type]
                   "dcmqi_pruned_kd": [d["pruned_kd"]["dcmqi_vs_reference"] for d in dice],  # type: ignore[index]
                   "dcmqi_unpruned": [d["unpruned"]["dcmqi_vs_reference"] for d in dice],  # type: ignore[index]
                   "complete": len(runs) == len(args.seeds)}
        # Written after every seed: a run stopped half-way keeps what it measured.
        out = write_result(args.out or OUT_SEEDS, benchmark="prune_liver_seeds", script=__file__, config=config,
                           metrics=metrics)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
