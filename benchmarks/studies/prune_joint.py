"""Does pruning the layers that feed the head cost a joint 4-organ student an organ? With and without them.

Takes the unpruned joint student of benchmarks/suite/recipes/totalseg_4organs_joint.toml (its distill
stage), prunes it by `--ratio` (L2 magnitude) once with `keep_head_inputs` and once without, fine-tunes
each by distillation from the unpruned student exactly as `edgemed compress` does (the recipe's
[prune] epochs and lr), and scores both against the teacher on the student's held-out block, right
after pruning and after fine-tuning.

    .venv/bin/python benchmarks/studies/prune_joint.py --parent runs/totalseg_4organs_joint/stages/distill-*/artifact

Writes benchmarks/results/prune_joint.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import RESULTS, ROOT, config_from_args, write_result  # noqa: E402

RECIPE = ROOT / "benchmarks" / "suite" / "recipes" / "totalseg_4organs_joint.toml"


def finetune_config(base: Any, recipe: Any) -> Any:
    """The distillation config `edgemed compress` fine-tunes a pruned student with (its prune stage).

    A copy of edgemed.pipeline's private `_finetune_config` (not public API): the recipe's [distill]
    options minus the architecture, with the recipe's organs, label map, [prune] epochs and lr, and the
    parent's preprocessing.
    """
    from edgemed.compress import config_from_dict

    raw = {k: None if v == "none" else v for k, v in recipe.distill.items()
           if k not in ("student", "student_kwargs", "ensemble")}
    raw.update(organs=list(recipe.organs), label_map=recipe.label_map, epochs=recipe.prune.finetune_epochs,
               lr=recipe.prune.lr, preprocess=base.preprocess)
    return config_from_dict(raw)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parent", type=Path, required=True, help="the unpruned joint student checkpoint")
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--out", type=Path, default=RESULTS / "prune_joint.json")
    args = parser.parse_args()

    from edgemed.artifacts import StudentCheckpoint
    from edgemed.compress import PruneConfig, distill, prune
    from edgemed.io import read_labels, read_volume
    from edgemed.metrics import dice
    from edgemed.models import load_student, predict_volume
    from edgemed.models.teachers import StudentTeacher
    from edgemed.pipeline import load_recipe

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
            cfg = finetune_config(parent, recipe)
            tuned = distill(list(recipe.scans), cfg, Path(tmp) / "tuned", teacher=StudentTeacher(parent.path),
                            init=pruned, progress=False)
            rows.append({"keep_head_inputs": keep, "parameters": pruned.metadata["pruning"]["parameters"],
                         "heldout_dice_pruned": score(pruned), "heldout_dice_finetuned": score(tuned),
                         "seconds": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]), file=sys.stderr)
    config = config_from_args(args, recipe=RECIPE, importance=recipe.prune.importance,
                              finetune_epochs=recipe.prune.finetune_epochs, finetune_lr=recipe.prune.lr)
    report = {"parent_heldout_dice": score(parent), "holdout_slices": block, "runs": rows}
    print(f"wrote {write_result(args.out, benchmark='prune_joint', script=__file__, config=config, metrics=report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
