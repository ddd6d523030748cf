"""Label-free distillation on a real CT: organ students vs TotalSegmentator's own predictions.

Teacher: TotalSegmentator (fast model, `example_seg_fast_force_split.nii.gz`, run on the full
`example_ct.nii.gz`; see ../shared/data/totalseg/README.md). Each organ gets its own student,
distilled from the teacher's labels alone; a contiguous block of 20 % of the organ's slices is
held out and never trained on. Dice vs the teacher on that block, on the CT's own 3 mm grid.

    .venv/bin/python benchmarks/suite/distill_totalseg.py [--organs liver spleen ...] [--epochs 40]
        [--set KEY=JSON ...] [--keep DIR] [--joint] [--out JSON]

`--set` overrides distillation options (as in benchmarks/studies/cross_scan.py), e.g. the within-scan
recipe of the README: `--set 'augment={"scale":[0.9,1.1],"aspect":0,"elastic":0,
"organ_contrast":0,"context_truncate":0}'`; `--keep DIR` keeps the students (to pool them with
`edgemed ensemble`).

Writes benchmarks/results/distill_totalseg.json (or --out; benchmarks/run_suite.py's steps write
distill_totalseg_{kidneys,within_s0,within_s1,joint4}.json).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import DATA, RESULTS, config_from_args, write_result  # noqa: E402

from edgemed.compress import DistillConfig, config_from_dict, distill  # noqa: E402

TOTALSEG = DATA / "totalseg"
OUT = RESULTS / "distill_totalseg.json"
TARGET_LIVER_DICE = 0.95


def _write(args: argparse.Namespace, results: list[dict[str, object]], *, complete: bool) -> None:
    config = config_from_args(args, teacher="TotalSegmentator fast model (example_seg_fast_force_split.nii.gz)",
                              scan="example_ct.nii.gz (122x101x112, 3 mm)", liver_target=TARGET_LIVER_DICE)
    metrics = {
        "complete": complete,
        "results": results,
        "liver_pass": next((r["dice_vs_teacher_heldout"] >= TARGET_LIVER_DICE for r in results  # type: ignore[operator]
                            if r["organ"] == "liver"), None),
    }
    write_result(args.out, benchmark="distill_totalseg", script=__file__, config=config, metrics=metrics)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--organs", nargs="+", default=["liver", "spleen", "kidney_left", "kidney_right"])
    parser.add_argument("--epochs", type=int, default=DistillConfig(organs=("liver",)).epochs)
    parser.add_argument("--student", default="unet2d")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=JSON", help="distillation option overrides")
    parser.add_argument("--keep", type=Path, default=None, help="keep the students here")
    parser.add_argument("--joint", action="store_true",
                        help="one student for all --organs (one held-out block over their union of slices)")
    args = parser.parse_args()
    overrides = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.set)}
    ct, seg = TOTALSEG / "example_ct.nii.gz", TOTALSEG / "example_seg_fast_force_split.nii.gz"
    if not ct.exists():
        print(f"real data not found at {TOTALSEG}; set EDGEMED_DATA", file=sys.stderr)
        return 2
    results: list[dict[str, object]] = []
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = args.keep or Path(tmp_dir)
        groups = [list(args.organs)] if args.joint else [[o] for o in args.organs]
        for organs in groups:
            config = config_from_dict({"organs": organs, "student": args.student, "epochs": args.epochs,
                                       "seed": args.seed, **overrides})
            t0 = time.perf_counter()
            ckpt = distill([ct], config, Path(tmp) / "+".join(organs), teacher_predictions=[seg])
            meta = ckpt.metadata
            for organ in organs:
                results.append({
                    "organ": organ,
                    "dice_vs_teacher_heldout": meta["validation"]["dice"][organ],
                    "holdout_slices": meta["validation"]["per_scan"][0]["holdout_slices"],
                    "student_organs": organs,
                    "parameters": meta["training"]["parameters"],
                    "train_seconds": round(time.perf_counter() - t0, 1),
                    "history_last": json.loads((ckpt.path / "history.json").read_text())[-1],
                })
                print(json.dumps(results[-1]), file=sys.stderr)
            # Written after every student: a run stopped half-way keeps what it measured.
            _write(args, results, complete=len(results) == len(args.organs))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
