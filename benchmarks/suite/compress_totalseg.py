"""`edgemed compress` on the real CT: liver, spleen and both kidneys, from teacher to the model to ship.

Runs benchmarks/suite/recipes/totalseg_4organs.toml, the default recipe (TotalSegmentator fast-model labels as the teacher,
label-free distillation, pruning + KD fine-tune, ONNX export, INT8 on ONNX Runtime and OpenVINO,
profiling here) and writes benchmarks/results/compress_totalseg[_TAG].json, plus the report's Pareto
plot as benchmarks/results/compress_totalseg[_TAG]_pareto.png, beside the run's report.html.
The default recipe takes about an hour on 2 idle cores (the quick one ~12 minutes); stages are cached,
so a rerun, or `--out` pointed at a finished run directory (e.g. one of recipes_check.py's), is quick
and records the stages' own seconds from its run log.

    .venv/bin/python benchmarks/suite/compress_totalseg.py [--out runs/totalseg_4organs] [--epochs N]
        [--finetune-epochs N] [--organs liver spleen ...] [--min-dice 0.85] [--latency-budget-ms 2000]
    .venv/bin/python benchmarks/suite/compress_totalseg.py --recipe benchmarks/suite/recipes/totalseg_4organs_quick.toml --tag quick
    .venv/bin/python benchmarks/suite/compress_totalseg.py --recipe benchmarks/suite/recipes/totalseg_4organs_full.toml --tag full
    .venv/bin/python benchmarks/suite/compress_totalseg.py --recipe benchmarks/suite/recipes/totalseg_4organs_joint.toml --tag joint

`--epochs 2 --finetune-epochs 1` checks the whole chain end to end in a few minutes (the Dice
then means nothing).
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import RESULTS, config_from_args, write_result  # noqa: E402

from edgemed.errors import EdgemedError  # noqa: E402
from edgemed.pipeline import load_recipe, run_recipe  # noqa: E402

RECIPE = Path(__file__).resolve().parent / "recipes" / "totalseg_4organs.toml"
#: The report embeds its plots as data URIs; the Pareto plot is the image of <section id='pareto'>.
PARETO = re.compile(r"<section id='pareto'>.*?src='data:image/png;base64,([A-Za-z0-9+/=]+)'", re.DOTALL)


def save_pareto(report: Path, out: Path) -> Path | None:
    """The Pareto plot of an `edgemed compress` report.html as a PNG file; None when the report has none."""
    found = PARETO.search(report.read_text(encoding="utf-8"))
    if found is None:
        print(f"no Pareto plot found in {report}; {out.name} not written", file=sys.stderr)
        return None
    out.write_bytes(base64.b64decode(found.group(1)))
    return out
#: Issue 7's bar: TotalSegmentator fast-vs-full agreement on this CT (its README) minus 1 point.
BAR = {"liver": 0.971, "spleen": 0.967, "kidney_left": 0.963, "kidney_right": 0.954}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", type=Path, default=RECIPE)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--epochs", type=int, default=None, help="distill epochs (default: the recipe's)")
    parser.add_argument("--finetune-epochs", type=int, default=None, help="pruning fine-tune epochs (default: the recipe's)")
    parser.add_argument("--organs", nargs="+", default=None)
    parser.add_argument("--min-dice", type=float, default=None)
    parser.add_argument("--latency-budget-ms", type=float, default=None)
    parser.add_argument("--tag", default="", help="suffix of the result file (e.g. smoke)")
    args = parser.parse_args()
    recipe = load_recipe(args.recipe)
    if not Path(recipe.scans[0]).exists():
        print(f"real data not found at {recipe.scans[0]}; see ../shared/data/totalseg/README.md", file=sys.stderr)
        return 2
    distill = dict(recipe.distill)
    if args.epochs is not None:
        distill["epochs"] = args.epochs
    prune = recipe.prune if args.finetune_epochs is None else dataclasses.replace(
        recipe.prune, finetune_epochs=args.finetune_epochs)
    recipe = dataclasses.replace(recipe, distill=distill, prune=prune).with_overrides(
        organs=tuple(args.organs) if args.organs else None, min_dice=args.min_dice,
        latency_budget_ms=args.latency_budget_ms, out=str(args.out) if args.out else None)
    t0 = time.perf_counter()
    try:
        result = run_recipe(recipe, raise_on_budget=False)
    except EdgemedError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    config = config_from_args(
        args, epochs=distill.get("epochs"), finetune_epochs=prune.finetune_epochs, target=recipe.target,
        latency_budget_ms=recipe.latency_budget_ms, min_dice=recipe.min_dice, joint=recipe.joint, bar=BAR,
        teacher_note="TotalSegmentator fast model; fast vs full model Dice on this CT: liver 0.98, "
                     "15 abdominal labels 0.92 (../shared/data/totalseg/README.md)")
    log = [json.loads(line) for line in (result.out / "run_log.jsonl").read_text().splitlines()]
    first = [r for r in log if r["run"] == log[0]["run"]] if log else []
    metrics = {
        "wall_seconds": round(time.perf_counter() - t0, 1), "report": result.report,
        # A run resumed from its stage cache takes seconds: what the stages cost is in the run log.
        "stage_seconds_ran": round(sum(float(r.get("seconds", 0.0)) for r in log if r["status"] == "ran"), 1),
        "stages_ran_in_first_run": sum(r["status"] == "ran" for r in first),
        "organs": [{"organ": o.organ, "bar": BAR.get(o.organ),
                    "meets_bar": bool(o.chosen and o.organ in BAR and o.chosen.dice >= BAR[o.organ]),
                    "best_heldout_dice": max((c.dice for c in o.candidates), default=None),
                    "chosen": o.chosen.to_json() if o.chosen else None, "error": o.error,
                    "below_bar": o.below_bar, "best": o.shown.name if o.shown else None, "knob": o.knob,
                    "runoff": o.runoff,
                    "front": [c.name for c in o.front],
                    "candidates": [{k: v for k, v in c.to_json().items() if k not in ("samples_ms", "lineage")}
                                   for c in o.candidates], "skipped": list(o.skipped)} for o in result.organs],
        # Each distilled (unpruned) student: its held-out Dice, training seconds and torch threads.
        "students": [{"organs": [o["name"] for o in m["metadata"]["organs"]],
                      "heldout_dice": m["metadata"]["validation"]["dice"],
                      "training_seconds": m["metadata"]["training"].get("seconds"),
                      "threads": m["metadata"]["training"].get("threads")}
                     for m in (json.loads(f.read_text()) for f in
                               sorted((result.out / "stages").glob("distill-*/artifact/manifest.json")))],
        "stages": {s: sum(r["status"] == "ran" for r in result.log if r["stage"] == s)
                   for s in ("distill", "prune", "export", "quantize", "profile", "runoff")},
    }
    name = f"compress_totalseg{'_' + args.tag if args.tag else ''}"
    out = write_result(RESULTS / f"{name}.json", benchmark="compress_totalseg", script=__file__, config=config,
                       metrics=metrics)
    save_pareto(Path(result.report), RESULTS / f"{name}_pareto.png")
    for o in result.organs:
        c = o.chosen
        line = o.error
        if c:
            ms, label = o.latency_of(c)
            line = f"{c.name}: Dice {c.dice:.4f}, {c.latency_ms:.1f} ms ({c.latency_label})" + (
                f", {ms:.1f} ms in the {label}" if label.startswith("run-off") else "")
        print(f"{o.organ:<14} {line}")
    print(f"wrote {out}, its Pareto plot and {result.report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
