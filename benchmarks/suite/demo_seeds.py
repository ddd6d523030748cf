"""`edgemed demo` as a new user runs it: three seeds on the idle machine, one beside a busy process.

Each run is `python -m edgemed demo --seed S --quiet --out runs/demo_seeds/seedS --overwrite` in a
fresh process, timed from the outside (wall clock, imports included). The printed table and
report.json of each run are kept. With --busy-seed, that seed is run again beside one busy process
(`python -c "while True: pass"`) for the "≤ 2× the idle time" bar. With --distill-real, the first
thing the README's tour does, a default `edgemed distill` of the liver on the real CT, is timed too.

    .venv/bin/python benchmarks/suite/demo_seeds.py [--seeds 0 1 2] [--busy-seed 0] [--distill-real]
                                                    [--update-readme]

--update-readme rewrites the README block between `<!-- demo:begin -->` and `<!-- demo:end -->`
with the first seed's table exactly as the demo printed it, and the measured durations.

Bars (issue 19): teacher Dice vs phantom truth >= 0.93; student within 2 Dice points of the teacher
on unseen phantoms; student >= 20x faster per volume, both timed in the same runtime; <= 2 min on 2
idle cores; beside one busy process <= 2x the idle time. Writes benchmarks/results/demo_seeds.json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import DATA, RESULTS, ROOT, config_from_args, write_result  # noqa: E402

OUT = RESULTS / "demo_seeds.json"
RUNS = ROOT / "runs" / "demo_seeds"
README = ROOT / "README.md"
BUSY = "while True: pass"
BARS = {"teacher_dice_vs_truth_min": 0.93, "student_within_points": 2.0, "speedup_min": 20.0, "idle_s_max": 120.0,
        "busy_ratio_max": 2.0}


def run_demo(seed: int, busy: int) -> dict[str, Any]:
    out = RUNS / (f"seed{seed}" + (f"_busy{busy}" if busy else ""))
    env = {k: v for k, v in os.environ.items() if k != "EDGEMED_THREADS"}
    procs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(busy)]
    try:
        time.sleep(0.5 if busy else 0.0)
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "edgemed", "demo", "--seed", str(seed), "--quiet", "--out", str(out),
                               "--overwrite"], cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    finally:
        for p in procs:
            p.kill()
            p.wait()
    if proc.returncode != 0:
        raise SystemExit(f"edgemed demo --seed {seed} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    report = json.loads((out / "report.json").read_text())
    t, s, c = report["models"]
    return {"seed": seed, "busy_processes": busy, "wall_s": round(wall, 1), "loadavg_1min_at_start": round(load, 2),
            "table": proc.stdout.strip(), "teacher_dice_vs_truth": round(t["dice_vs_truth"], 4),
            "student_dice_vs_truth": round(s["dice_vs_truth"], 4), "student_dice_vs_teacher": round(s["dice_vs_teacher"], 4),
            "compressed_dice_vs_truth": round(c["dice_vs_truth"], 4), "compressed_precision": c["precision"],
            "student_points_below_teacher": round(100 * (t["dice_vs_truth"] - s["dice_vs_truth"]), 2),
            "speedup_student": round(report["speedup_student_vs_teacher"], 1),
            "speedup_compressed": round(report["speedup_compressed_vs_teacher"], 1),
            "ms_per_volume": {r["role"]: round(1000 * r["s_per_volume"], 1) for r in report["models"]},
            "steps_s": report["timings_s"], "report_html": str((out / "report.html").relative_to(ROOT))}


def distill_real() -> dict[str, Any]:
    """The tour's first command with its defaults: a liver student from the real CT, timed."""
    ct, seg = DATA / "totalseg" / "example_ct.nii.gz", DATA / "totalseg" / "example_seg_fast_force_split.nii.gz"
    if not ct.is_file():
        return {"skipped": f"{ct} is absent (set EDGEMED_DATA)"}
    out = RUNS / "tour_liver"
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgemed", "distill", "--scans", str(ct), "--teacher-predictions",
                           str(seg), "--organ", "liver", "--out", str(out), "--quiet", "--json", "--overwrite"],
                          cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"edgemed distill failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    got = json.loads(proc.stdout)
    return {"command": "edgemed distill --scans $CT --teacher-predictions $TEACHER --organ liver --out runs/liver",
            "wall_min": round(wall / 60, 1), "epochs": got["training"]["epochs"],
            "heldout_dice_liver": got["validation"]["dice"]["liver"]}


def update_readme(metrics: dict[str, Any]) -> None:
    first = metrics["idle"][0]
    # The table and its summary line as printed (the lines after them name this run's output paths).
    table = first["table"].split("\n\nreport:")[0]
    lines = ["```", f"$ edgemed demo --seed {first['seed']}", table, "```", "",
             f"Measured by `benchmarks/suite/demo_seeds.py` → `demo_seeds.json` on 2 idle cores: the run above took "
             f"{_minsec(first['wall_s'])}."]
    seeds = metrics["idle"]
    lines.append(
        f"Over seeds {', '.join(str(r['seed']) for r in seeds)}: teacher Dice vs truth "
        f"{min(r['teacher_dice_vs_truth'] for r in seeds):.3f}–{max(r['teacher_dice_vs_truth'] for r in seeds):.3f}, "
        f"student {min(r['student_dice_vs_truth'] for r in seeds):.3f}–{max(r['student_dice_vs_truth'] for r in seeds):.3f} "
        f"(at most {max(r['student_points_below_teacher'] for r in seeds):.1f} points below the teacher), "
        f"{min(r['speedup_student'] for r in seeds):.1f}–{max(r['speedup_student'] for r in seeds):.1f}× faster on one "
        "thread, "
        f"{_minsec(min(r['wall_s'] for r in seeds))}–{_minsec(max(r['wall_s'] for r in seeds))} per run.")
    if metrics.get("busy"):
        b = metrics["busy"]
        lines.append(f"Beside one busy process the same seed took {_minsec(b['wall_s'])} "
                     f"({b['ratio_to_idle']:.2f}× its idle time).")
    text = _replace_block(README.read_text(), "demo", "\n".join(lines))
    real = metrics.get("distill_real")
    if real and "wall_min" in real:
        text = _replace_block(text, "tour-distill", (
            f"With its defaults ({real['epochs']} epochs) this took {real['wall_min']:.1f} min on 2 idle cores and "
            f"reached a held-out Dice of {real['heldout_dice_liver']:.3f} vs the teacher "
            "(`benchmarks/suite/demo_seeds.py --distill-real` → `demo_seeds.json`)."))
    README.write_text(text)


def _replace_block(text: str, name: str, block: str) -> str:
    new, n = re.subn(rf"(<!-- {name}:begin -->\n).*?(\n<!-- {name}:end -->)", lambda m: m.group(1) + block + m.group(2),
                     text, flags=re.S)
    if n != 1:
        raise SystemExit(f"README.md has no <!-- {name}:begin --> ... <!-- {name}:end --> block to update")
    return new


def _minsec(s: float) -> str:
    return f"{int(s // 60)} min {int(round(s % 60)):02d} s" if s >= 60 else f"{s:.0f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--busy-seed", type=int, default=None, help="run this seed again beside one busy process")
    parser.add_argument("--distill-real", action="store_true", help="also time the tour's default liver distill")
    parser.add_argument("--update-readme", action="store_true")
    parser.add_argument("--readme-only", action="store_true",
                        help="rewrite the README blocks from the existing demo_seeds.json; run nothing")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()

    from edgemed.measure import host_facts

    if args.readme_only:
        update_readme(json.loads(args.out.read_text())["metrics"])
        return 0
    metrics: dict[str, Any] = {"idle": []}
    for seed in args.seeds:
        metrics["idle"].append(row := run_demo(seed, 0))
        print(f"seed {seed}: {row['wall_s']} s, teacher {row['teacher_dice_vs_truth']}, student "
              f"{row['student_dice_vs_truth']} ({row['speedup_student']}x)", file=sys.stderr, flush=True)
    if args.busy_seed is not None:
        idle = next((r for r in metrics["idle"] if r["seed"] == args.busy_seed), None) or run_demo(args.busy_seed, 0)
        busy = run_demo(args.busy_seed, 1)
        busy["ratio_to_idle"] = round(busy["wall_s"] / idle["wall_s"], 2)
        metrics["busy"] = busy
        print(f"busy: {busy['wall_s']} s ({busy['ratio_to_idle']}x)", file=sys.stderr, flush=True)
    if args.distill_real:
        metrics["distill_real"] = distill_real()
    rows = metrics["idle"]
    metrics["bars"] = BARS
    metrics["meets"] = {
        "teacher_dice": all(r["teacher_dice_vs_truth"] >= BARS["teacher_dice_vs_truth_min"] for r in rows),
        "student_within": all(r["student_points_below_teacher"] <= BARS["student_within_points"] for r in rows),
        "speedup": all(r["speedup_student"] >= BARS["speedup_min"] for r in rows),
        "idle_time": all(r["wall_s"] <= BARS["idle_s_max"] for r in rows),
        "busy_ratio": None if "busy" not in metrics else metrics["busy"]["ratio_to_idle"] <= BARS["busy_ratio_max"],
    }
    write_result(args.out, benchmark="demo_seeds", script=__file__, config=config_from_args(args), metrics=metrics,
                 host=host_facts())
    if args.update_readme:
        update_readme(metrics)
    print(json.dumps(metrics["meets"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
