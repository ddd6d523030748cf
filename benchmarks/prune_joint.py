"""Pruning a joint 4-organ student with and without the layers that feed its head.

Takes the unpruned joint student of benchmarks/recipes/totalseg_4organs_joint.toml (its distill
stage), prunes it by `--ratio` (L2 magnitude) once with `keep_head_inputs` and once without, fine-tunes
each by distillation from the unpruned student exactly as `edgemed compress` does (the recipe's
[prune] epochs and lr), and scores both against the teacher on the student's held-out block, right
after pruning and after fine-tuning.

    .venv/bin/python benchmarks/prune_joint.py --parent runs/totalseg_4organs_joint/stages/distill-*/artifact

Writes benchmarks/results/prune_joint.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from _results import RESULTS, write_result

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "benchmarks" / "recipes" / "totalseg_4organs_joint.toml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parent", type=Path, required=True, help="the unpruned joint student checkpoint")
    parser.add_argument("--ratio", type=float, default=0.3)
    args = parser.parse_args()

    from edgemed.artifacts import StudentCheckpoint
    from edgemed.compress import PruneConfig, distill, prune
    from edgemed.io import read_labels, read_volume
    from edgemed.metrics import dice
    from edgemed.models import load_student, predict_volume
    from edgemed.models.teachers import StudentTeacher
    from edgemed.pipeline import load_recipe
    from edgemed.pipeline._stages import _finetune_config

    recipe = load_recipe(RECIPE)
    if not Path(recipe.scans[0]).exists():
        print(f"real data not found at {recipe.scans[0]}; see ../shared/data/totalseg/README.md", file=sys.stderr)
        return 2
    parent = StudentCheckpoint.load(args.parent)
    block = parent.metadata["validation"]["per_scan"][0]["holdout_slices"]
    held = slice(block[0], block[1] + 1)
    ct = read_volume(recipe.scans[0])
    teacher = read_labels(recipe.teacher_predictions[0], like=ct).array

    def score(ckpt: StudentCheckpoint) -> dict[str, float]:
        pred = predict_volume(load_student(ckpt), ct, ckpt.preprocess).argmax(0)
        return {o.name: round(float(dice(pred[:, :, held] == o.channel, teacher[:, :, held] == o.label_id)), 4)
                for o in ckpt.organs}

    rows = []
    for keep in (False, True):
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="edgemed-prune-joint-") as tmp:
            pruned = prune(parent, PruneConfig(ratio=args.ratio, importance=recipe.prune.importance,
                                               keep_head_inputs=keep), Path(tmp) / "pruned")
            cfg = _finetune_config(parent, recipe, tuple(recipe.organs), recipe.prune.finetune_epochs, recipe.prune.lr)
            tuned = distill(list(recipe.scans), cfg, Path(tmp) / "tuned", teacher=StudentTeacher(parent.path),
                            init=pruned, progress=False)
            rows.append({"keep_head_inputs": keep, "parameters": pruned.metadata["pruning"]["parameters"],
                         "heldout_dice_pruned": score(pruned), "heldout_dice_finetuned": score(tuned),
                         "seconds": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]), file=sys.stderr)
    report = {"benchmark": "prune_joint", "parent": str(args.parent), "parent_heldout_dice": score(parent),
              "holdout_slices": block, "ratio": args.ratio, "importance": recipe.prune.importance,
              "finetune_epochs": recipe.prune.finetune_epochs, "finetune_lr": recipe.prune.lr, "runs": rows}
    print(f"wrote {write_result(RESULTS / 'prune_joint.json', report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
