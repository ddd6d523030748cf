"""Does every `edgemed compress` recipe in the repo succeed on the data it names, reproducibly? (issue 22)

For each recipe asked for, runs the command a user types, in a fresh run directory each time (no stage
cache shared between runs):

    python -m edgemed compress benchmarks/suite/recipes/<recipe>.toml --out runs/check/<recipe>_s<seed>_r<i> --seed <seed> --json

`--repeat N` runs the first seed N times (same recipe, same seed, same machine: the chosen models and
their Dice must be identical), every further seed once (the spread a seed makes). Recorded per run:
exit code, wall time, the load average before and after (the machine is shared: idle means load < 0.5
beside it), and per organ the shipped model (or the best one, below the bar, with the knob most likely
to lift it) and its held-out Dice.

`--manual ORGAN ...` also runs the manual default path, `edgemed distill --organ ORGAN` with every
default, and compares its held-out Dice with the recipe's unpruned FP32 student of that organ (same
held-out slices) and with the model the recipe shipped.

    .venv/bin/python benchmarks/suite/recipes_check.py --recipes totalseg_4organs_quick --repeat 2 --seeds 0 1
    .venv/bin/python benchmarks/suite/recipes_check.py --recipes totalseg_4organs --seeds 0 --manual liver \\
        --reuse runs/check/default_s0

`--reuse DIR` takes an existing run directory of the first recipe's first seed instead of running it
again (its stage log says how long each stage took). Writes benchmarks/results/recipes_check.json
(or --out).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import DATA, RESULTS, ROOT, config_from_args, write_result  # noqa: E402

RECIPES = Path(__file__).resolve().parent / "recipes"
RUNS = ROOT / "runs" / "check"
CT = DATA / "totalseg" / "example_ct.nii.gz"
SEG = DATA / "totalseg" / "example_seg_fast_force_split.nii.gz"
#: Same recipe, same seed, same machine: held-out Dice equal to this (bit-identical training gives 0).
DICE_TOLERANCE = 1e-4


def _load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def run_compress(recipe: Path, out: Path, seed: int) -> dict[str, Any]:
    """One `edgemed compress` as a user runs it; its JSON results and what it cost."""
    cmd = [sys.executable, "-m", "edgemed", "compress", str(recipe.relative_to(ROOT)), "--out", str(out.relative_to(ROOT)),
           "--seed", str(seed), "--no-progress", "--json"]
    load0, t0 = _load(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    wall = time.perf_counter() - t0
    record: dict[str, Any] = {"command": " ".join(["edgemed", *cmd[3:]]), "out": str(out.relative_to(ROOT)),
                              "seed": seed, "exit_code": proc.returncode, "wall_s": round(wall, 1),
                              "load_before": load0, "load_after": _load(),
                              "stderr_tail": proc.stderr.strip().splitlines()[-3:]}
    # results.json, not stdout: NNCF's progress bars print to stdout between the JSON's lines.
    try:
        results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record["organs"] = {}
        return record
    return {**record, **summarise(results, out)}


def summarise(results: dict[str, Any], out: Path) -> dict[str, Any]:
    """Per organ: shipped (or best, below the bar) model, its Dice, and the unpruned FP32 student's."""
    organs: dict[str, Any] = {}
    for o in results["organs"]:
        best = o.get("best") or {}
        unpruned = [c for c in o["candidates"] if c["prune_ratio"] == 0 and c["precision"] == "fp32"]
        organs[o["organ"]] = {
            "shipped": o["chosen"], "below_bar": o.get("below_bar", o["chosen"] is None),
            "model": best.get("name"), "dice": best.get("dice"), "latency_ms": best.get("latency_ms"),
            "runoff_ms": ((o.get("runoff") or {}).get("latency_ms") or {}).get(best.get("name")),
            "runoff_entrants": len(((o.get("runoff") or {}).get("latency_ms") or {})),
            "runoff_all_ms": {k: round(v, 1) for k, v in ((o.get("runoff") or {}).get("latency_ms") or {}).items()},
            "unpruned_fp32_dice": max((c["dice"] for c in unpruned), default=None),
            "student_checkpoint_dice": max((c["dice_checkpoint"] for c in unpruned
                                            if c.get("dice_checkpoint") is not None), default=None),
            "knob": o.get("knob"),
            "candidates": {c["name"]: round(c["dice"], 4) for c in o["candidates"]},
        }
    log = [json.loads(line) for line in (out / "run_log.jsonl").read_text().splitlines()] \
        if (out / "run_log.jsonl").is_file() else []
    stage_s: dict[str, float] = {}
    for r in log:
        stage_s[r["stage"]] = round(stage_s.get(r["stage"], 0.0) + float(r.get("seconds", 0.0)), 1)
    return {"organs": organs, "stage_seconds": stage_s, "stages_ran": sum(r["status"] == "ran" for r in log)}


def manual_distill(organ: str, out: Path) -> dict[str, Any]:
    """`edgemed distill --organ ORGAN` with every default: the manual path the recipe must match."""
    from edgemed.artifacts import StudentCheckpoint

    if not (out / "manifest.json").is_file():
        cmd = [sys.executable, "-m", "edgemed", "distill", "--scans", str(CT), "--teacher-predictions", str(SEG),
               "--organ", organ, "--out", str(out.relative_to(ROOT)), "--quiet"]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
        if proc.returncode:
            return {"exit_code": proc.returncode, "stderr_tail": proc.stderr.strip().splitlines()[-3:]}
        wall = round(time.perf_counter() - t0, 1)
    else:
        wall = None
    ckpt = StudentCheckpoint.load(out)
    return {"out": str(out.relative_to(ROOT)), "wall_s": wall, "dice": ckpt.meta.validation.dice.get(organ),
            "holdout_slices": ckpt.meta.validation.per_scan[0].get("holdout_slices"),
            "training_seconds": ckpt.meta.training.seconds}


def compare(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Same seed: identical choices and Dice? Different seeds: the spread."""
    by_seed: dict[int, list[dict[str, Any]]] = {}
    for r in runs:
        by_seed.setdefault(r["seed"], []).append(r)
    same: dict[str, Any] = {}
    for seed, rs in by_seed.items():
        if len(rs) < 2:
            continue
        a = rs[0]["organs"]
        diffs = {o: {"models": [r["organs"].get(o, {}).get("model") for r in rs],
                     "dice": [r["organs"].get(o, {}).get("dice") for r in rs]} for o in a}
        identical = all(len(set(d["models"])) == 1 and None not in d["dice"]
                        and max(d["dice"]) - min(d["dice"]) <= DICE_TOLERANCE for d in diffs.values())
        # Every candidate, not only the shipped one: the students and their builds, the part of a
        # run that does not depend on a timing.
        candidates: dict[str, Any] = {}
        for o in a:
            per = [r["organs"].get(o, {}).get("candidates") or {} for r in rs]
            names = sorted(set().union(*per))
            differ = {n: [p.get(n) for p in per] for n in names
                      if None in [p.get(n) for p in per]
                      or max(p[n] for p in per) - min(p[n] for p in per) > DICE_TOLERANCE}
            # How far the run-off's ratio between two builds moved from one run to the other: a tie
            # margin below this cannot make the pick reproducible.
            times = [r["organs"].get(o, {}).get("runoff_all_ms") or {} for r in rs]
            common = sorted(set.intersection(*(set(t) for t in times))) if times else []
            drift = max((max(t[x] / t[y] for t in times) / min(t[x] / t[y] for t in times), x, y)
                        for i, x in enumerate(common) for y in common[i + 1:]) if len(common) > 1 and not differ else None
            candidates[o] = {"built": len(names), "differ": differ,
                             "runoff_ratio_drift": None if drift is None else
                             {"factor": round(drift[0], 3), "builds": [drift[1], drift[2]]}}
        same[str(seed)] = {"identical": identical, "per_organ": diffs, "candidates": candidates}
    firsts = [rs[0] for rs in by_seed.values()]
    spread = {}
    if len(firsts) > 1:
        for o in firsts[0]["organs"]:
            ds = [r["organs"].get(o, {}).get("dice") for r in firsts if r["organs"].get(o, {}).get("dice") is not None]
            spread[o] = {"seeds": [r["seed"] for r in firsts], "dice": ds,
                         "spread": round(max(ds) - min(ds), 4) if ds else None}
    return {"same_seed": same, "seed_spread": spread, "dice_tolerance": DICE_TOLERANCE}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", default=["totalseg_4organs_quick"],
                        help="recipe names under benchmarks/suite/recipes/")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--repeat", type=int, default=1, help="runs of the first seed")
    parser.add_argument("--manual", nargs="*", default=[], help="organs to distill by hand with every default")
    parser.add_argument("--reuse", type=Path, default=None, help="an existing run dir for the first recipe's first run")
    parser.add_argument("--out", type=Path, default=RESULTS / "recipes_check.json")
    parser.add_argument("--resummarise", type=Path, default=None,
                        help="rebuild a result file's per-organ summaries from its run folders (nothing reruns)")
    args = parser.parse_args()
    if args.resummarise is not None:
        prev = json.loads(args.resummarise.read_text(encoding="utf-8"))
        metrics = prev["metrics"]
        for name, entry in metrics.items():
            runs = [{**r, **summarise(json.loads((ROOT / r["out"] / "results.json").read_text()), ROOT / r["out"])}
                    for r in entry["runs"]]
            metrics[name] = {**entry, "runs": runs, **compare(runs)}
        write_result(args.out, benchmark="recipes_check", script=__file__,
                     config={**prev["config"], "resummarised_from": str(args.resummarise)}, metrics=metrics)
        print(f"wrote {args.out}")
        return
    results: dict[str, Any] = {}
    for name in args.recipes:
        recipe = RECIPES / f"{name}.toml"
        runs = []
        for seed in args.seeds:
            for i in range(args.repeat if seed == args.seeds[0] else 1):
                out = RUNS / f"{name}_s{seed}_r{i}"
                if args.reuse is not None and name == args.recipes[0] and seed == args.seeds[0] and i == 0:
                    from edgemed.pipeline import load_recipe, run_recipe

                    rerun = run_recipe(load_recipe(recipe), out=args.reuse, progress=False, raise_on_budget=False)
                    log = [json.loads(x) for x in (args.reuse / "run_log.jsonl").read_text().splitlines()]
                    first = [r for r in log if r["run"] == log[0]["run"]]
                    record = {"command": f"edgemed compress {recipe.relative_to(ROOT)} --out {args.reuse}",
                              "out": str(args.reuse), "seed": seed, "reused": True,
                              "exit_code": int(any(o.chosen is None for o in rerun.organs)),
                              "wall_s": round(sum(float(r.get("seconds", 0)) for r in first), 1),
                              "wall_note": "sum of the first run's stage times (run_log.jsonl)",
                              **summarise(rerun.to_json(), args.reuse)}
                else:
                    if out.exists():
                        import shutil

                        shutil.rmtree(out)  # our own scratch run directory: a fresh run, no cache reused
                    record = run_compress(recipe, out, seed)
                print(f"{name} seed {seed} run {i}: exit {record['exit_code']}, {record['wall_s']:.0f} s, "
                      + ", ".join(f"{o} {v['dice']:.4f}{' (below)' if v['below_bar'] else ''}"
                                  for o, v in record.get("organs", {}).items() if v.get("dice") is not None),
                      flush=True)
                runs.append(record)
        results[name] = {"runs": runs, **compare(runs)}
        if args.manual:
            manual = {}
            for organ in args.manual:
                m = manual_distill(organ, RUNS / f"manual_{organ}")
                r = runs[0]["organs"].get(organ, {})
                manual[organ] = {"manual": m, "recipe_unpruned_fp32_dice": r.get("unpruned_fp32_dice"),
                                 "recipe_student_checkpoint_dice": r.get("student_checkpoint_dice"),
                                 "recipe_shipped_dice": r.get("dice"), "recipe_shipped": r.get("model")}
                print(f"manual {organ}: {m.get('dice')} vs recipe student {r.get('student_checkpoint_dice')}, "
                      f"shipped {r.get('dice')}", flush=True)
            results[name]["manual"] = manual
    config = config_from_args(args, dice_tolerance=DICE_TOLERANCE)
    write_result(args.out, benchmark="recipes_check", script=__file__, config=config, metrics=results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
