"""How far does the run-off's verdict move between processes, and what tie margin keeps the pick still? (issue 22)

`edgemed compress` times the models of an organ that qualify against each other, interleaved, and ships
the fastest (`runoff_stage`); latencies within `[search] latency_tie` of the fastest are ties decided by
Dice. Two from-scratch runs of one recipe and seed built the same models with the same Dice, yet shipped
different liver models: the latency ratio of two builds moved 21 % between the two runs' run-offs.

This script re-times the very same bundles of finished run directories: each repeat is a fresh process
that runs the run-off stage exactly as `compress` does (same rounds, warm-up, threads, rotated order), in
a throw-away stage cache, repeats interleaved across the run directories. With the run's own run-off that
makes `--repeats + 1` verdicts per organ. For each tie margin it reports whether every verdict picks the
same model, and what the margin costs: how much slower the pick is than the fastest qualifying model.

    .venv/bin/python benchmarks/suite/runoff_repeat.py runs/check/totalseg_4organs_s0_r1 \\
        runs/check/totalseg_4organs_s1_r0 --repeats 3

Writes benchmarks/results/runoff_repeat.json (or --out). The machine must be idle: the load average
before and after every repeat is recorded.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import RESULTS, ROOT, config_from_args, write_result  # noqa: E402

MARGINS = (0.0, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30, 0.40)


def _load() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def _results(run: Path) -> dict[str, Any]:
    return json.loads((run / "results.json").read_text())


def child(run: Path, recipe_path: Path) -> dict[str, Any]:
    """In this (fresh) process: every organ's run-off of `run`, as `compress` runs it, in a scratch cache."""
    from edgemed.pipeline import StageCache, load_recipe, runoff_stage

    recipe = load_recipe(recipe_path)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="runoff_repeat_") as tmp:
        cache = StageCache(tmp)
        for organ in _results(run)["organs"]:
            if not organ.get("runoff"):
                continue
            by_name = {c["name"]: c for c in organ["candidates"]}
            entrants = [(name, ROOT / by_name[name]["bundle"], by_name[name]["backend"]) for name in organ["runoff"]["latency_ms"]]
            t0 = time.perf_counter()
            stage = runoff_stage(cache, entrants, recipe, organ=organ["organ"])
            out[organ["organ"]] = {"latency_ms": stage.record["summary"]["latency_ms"],
                                   "seconds": round(time.perf_counter() - t0, 1)}
    return out


def verdicts(organ: dict[str, Any], timings: list[dict[str, float]], recipe: Any) -> dict[str, Any]:
    """Per tie margin: each timing's pick, whether they all agree, and the pick's latency over the fastest."""
    from edgemed.pipeline import Candidate, choose

    fields = Candidate.__dataclass_fields__
    cands = {c["name"]: Candidate(**{k: (tuple(map(tuple, v)) if k == "lineage" else tuple(v) if k in ("widths", "samples_ms") else v)
                                     for k, v in c.items() if k in fields}) for c in organ["candidates"]}
    names = list(timings[0])
    per_margin = {}
    for m in MARGINS:
        picks, costs = [], []
        for t in timings:
            judged = [replace(cands[n], latency_ms=t[n]) for n in names]
            pick = choose(judged, latency_budget_ms=recipe.latency_budget_ms, min_dice=recipe.min_dice, tie=m)
            picks.append(pick.name)
            costs.append(t[pick.name] / min(t.values()) - 1.0)
        per_margin[f"{m:.2f}"] = {"picks": picks, "agree": len(set(picks)) == 1,
                                  "pick_dice": sorted({cands[p].dice for p in picks}),
                                  "slower_than_fastest_max": round(max(costs), 3)}
    # How far the ratio of two builds moved between timings: max/min of t[a]/t[b] - 1, over every pair.
    drift = {}
    for a, b in itertools.combinations(names, 2):
        ratios = [t[a] / t[b] for t in timings]
        drift[f"{a} / {b}"] = round(max(ratios) / min(ratios) - 1.0, 3)
    worst = max(drift, key=drift.get) if drift else None
    return {"entrants": names, "dice": {n: cands[n].dice for n in names},
            "latency_ms": timings, "margins": per_margin,
            "ratio_drift_max": drift.get(worst) if worst else 0.0, "ratio_drift_worst_pair": worst,
            "ratio_drift_median": round(statistics.median(drift.values()), 3) if drift else 0.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path, help="finished `edgemed compress` run directories")
    ap.add_argument("--repeats", type=int, default=3, help="fresh-process run-offs per run directory")
    ap.add_argument("--recipe", type=Path, default=ROOT / "benchmarks" / "suite" / "recipes" / "totalseg_4organs.toml",
                    help="the recipe the runs were made from (its [profile] sets rounds and threads)")
    ap.add_argument("--out", type=Path, default=RESULTS / "runoff_repeat.json")
    ap.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.recipe)))
        return
    from edgemed.pipeline import load_recipe

    recipe = load_recipe(args.recipe)
    runs = [r.resolve() for r in args.runs]
    repeats: dict[str, list[dict[str, Any]]] = {str(r.relative_to(ROOT)): [] for r in runs}
    for i in range(args.repeats):
        for run in runs:
            load0, t0 = _load(), time.perf_counter()
            proc = subprocess.run([sys.executable, __file__, str(run), "--child", str(run), "--recipe", str(args.recipe)],
                                  cwd=ROOT, capture_output=True, text=True)
            if proc.returncode != 0:
                sys.exit(f"run-off repeat {i} of {run} failed: {proc.stderr.strip().splitlines()[-1:]}")
            rec = {"organs": json.loads(proc.stdout.strip().splitlines()[-1]), "load_before": load0,
                   "load_after": _load(), "seconds": round(time.perf_counter() - t0, 1)}
            repeats[str(run.relative_to(ROOT))].append(rec)
            print(f"repeat {i + 1}/{args.repeats} {run.name}: {rec['seconds']} s, load {load0:.2f} -> {rec['load_after']:.2f}",
                  flush=True)
    metrics: dict[str, Any] = {"runs": {}}
    agree_all: dict[str, bool] = {f"{m:.2f}": True for m in MARGINS}
    cost_all: dict[str, float] = {f"{m:.2f}": 0.0 for m in MARGINS}
    drifts = []
    for run in runs:
        key = str(run.relative_to(ROOT))
        organs = {}
        for organ in _results(run)["organs"]:
            if not organ.get("runoff"):
                continue
            timings = [organ["runoff"]["latency_ms"]] + [r["organs"][organ["organ"]]["latency_ms"] for r in repeats[key]]
            v = verdicts(organ, timings, recipe)
            v["in_run_chosen"] = organ["runoff"].get("chosen")
            organs[organ["organ"]] = v
            drifts.append(v["ratio_drift_max"])
            for m, rec in v["margins"].items():
                agree_all[m] &= rec["agree"]
                cost_all[m] = max(cost_all[m], rec["slower_than_fastest_max"])
        metrics["runs"][key] = {"organs": organs, "repeats": [{k: r[k] for k in ("load_before", "load_after", "seconds")}
                                                               for r in repeats[key]]}
    metrics["summary"] = {
        "verdicts_per_organ": args.repeats + 1,
        "every_organ_agrees": agree_all,
        "smallest_margin_all_agree": next((m for m in agree_all if agree_all[m]), None),
        "pick_slower_than_fastest_max": cost_all,
        "ratio_drift_max_per_organ": sorted(drifts),
    }
    write_result(args.out, benchmark="runoff_repeat", script=__file__, config=config_from_args(args, margins=list(MARGINS)),
                 metrics=metrics)
    print(json.dumps(metrics["summary"], indent=1))


if __name__ == "__main__":
    main()
