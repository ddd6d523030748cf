"""Fast on a busy machine: distillation and `segment` alone and beside 1 and 2 busy processes, old vs new threads.

Every case runs in a fresh subprocess, with the busy processes (`python -c "while True: pass"`, one
core each) started just before it and killed after it:

    distill   `edgemed distill` on the real CT (liver, default student and settings, --epochs N):
              per-epoch seconds = the checkpoint's training seconds / epochs (validation included)
    segment   `Segmenter.segment` of the real CT through edgemed.runtime (ORT and OpenVINO): the
              session opens after the busy processes start; median seconds per volume of --repeats

Behaviours, side by side in one run:
    old   EDGEMED_THREADS=legacy: every core, OpenMP/ORT worker threads spinning (the settings before
          edgemed._threads)
    new   defaults: threads = the CPUs free when the job starts, passive waiting

Ratios are to the same behaviour's idle time (`ratio`) and to the old idle time (`ratio_to_old_idle`).
The bundle is runs/segment_memory/liver.edgemed when present (benchmarks/suite/segment_memory.py),
else a 3-epoch liver student exported to runs/busy_machine/liver.edgemed.

    .venv/bin/python benchmarks/suite/busy_machine.py [--epochs 2] [--repeats 3] [--busy 0 1 2]

Writes benchmarks/results/busy_machine.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import DATA, RESULTS, ROOT, config_from_args, write_result  # noqa: E402

OUT = RESULTS / "busy_machine.json"
RUNS = ROOT / "runs" / "busy_machine"
CT = DATA / "totalseg" / "example_ct.nii.gz"
SEG = DATA / "totalseg" / "example_seg_fast_force_split.nii.gz"
SHARED_BUNDLE = ROOT / "runs" / "segment_memory" / "liver.edgemed"
BUSY = "while True: pass"
MODES = {"old": {"EDGEMED_THREADS": "legacy"}, "new": {}}
#: What a child segments with: opens the session (which samples the load), then times `segment`.
SEGMENT_CHILD = """
import json, statistics, sys, time
from edgemed import runtime
from edgemed.io import read_volume
bundle, scan, backend, repeats = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
volume = read_volume(scan)
t0 = time.perf_counter()
with runtime.load(bundle, backend=backend) as seg:
    load_s = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        seg.segment(volume)
        times.append(time.perf_counter() - t)
    print(json.dumps({"load_s": load_s, "volume_s": times, "threads": getattr(seg.session, "threads", None),
                      "description": getattr(seg.session, "description", None)}))
"""


def _env(mode: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("EDGEMED_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT",
                                                             "OMP_NUM_THREADS")}
    return {**env, **MODES[mode], "PYTHONUNBUFFERED": "1"}


def _with_busy(n: int, argv: list[str], env: dict[str, str]) -> tuple[str, float]:
    """Run argv beside n busy processes; (stdout, wall seconds)."""
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(n)]
    try:
        time.sleep(0.5 if n else 0.0)  # let them reach full speed before the job samples the load
        t0 = time.perf_counter()
        proc = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
    finally:
        for p in busy:
            p.kill()
            p.wait()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return proc.stdout, wall


def _build_bundle() -> Path:
    if SHARED_BUNDLE.is_dir():
        return SHARED_BUNDLE
    bundle = RUNS / "liver.edgemed"
    if not bundle.is_dir():
        student = RUNS / "liver_student"
        subprocess.run([sys.executable, "-m", "edgemed", "distill", "--scans", str(CT), "--teacher-predictions",
                        str(SEG), "--organ", "liver", "--out", str(student), "--epochs", "3", "--quiet",
                        "--overwrite"], cwd=ROOT, check=True)
        subprocess.run([sys.executable, "-m", "edgemed", "export", str(student), "--out", str(bundle)],
                       cwd=ROOT, check=True)
    return bundle


def distill_case(mode: str, busy: int, epochs: int) -> dict[str, object]:
    out = RUNS / f"distill_{mode}_{busy}"
    stdout, wall = _with_busy(busy, [sys.executable, "-m", "edgemed", "distill", "--scans", str(CT),
                                     "--teacher-predictions", str(SEG), "--organ", "liver", "--out", str(out),
                                     "--epochs", str(epochs), "--quiet", "--json", "--overwrite"], _env(mode))
    training = json.loads(stdout)["training"]
    shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(Path(f"{out}.resume"), ignore_errors=True)
    return {"epoch_s": round(training["seconds"] / epochs, 2), "train_s": training["seconds"],
            "threads": training.get("threads"), "wall_s": round(wall, 1)}


def segment_case(mode: str, busy: int, backend: str, bundle: Path, repeats: int) -> dict[str, object]:
    stdout, wall = _with_busy(busy, [sys.executable, "-c", SEGMENT_CHILD, str(bundle), str(CT), backend,
                                     str(repeats)], _env(mode))
    got = json.loads(stdout.strip().splitlines()[-1])
    return {"volume_s": round(statistics.median(got["volume_s"]), 3), "all_s": [round(t, 3) for t in got["volume_s"]],
            "load_s": round(got["load_s"], 2), "threads": got["threads"], "wall_s": round(wall, 1)}


def _ratios(cases: dict[str, dict[str, dict[str, object]]], key: str) -> None:
    """Add ratio (to the same mode's idle) and ratio_to_old_idle to every case in place."""
    old_idle = cases["old"].get("0", {}).get(key)
    for mode, by_busy in cases.items():
        idle = by_busy.get("0", {}).get(key)
        for case in by_busy.values():
            if idle:
                case["ratio"] = round(float(case[key]) / float(idle), 2)
            if old_idle:
                case["ratio_to_old_idle"] = round(float(case[key]) / float(old_idle), 2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=2, help="distillation epochs per case")
    parser.add_argument("--repeats", type=int, default=3, help="`segment` calls per case (median)")
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1, 2], help="busy processes beside the job")
    parser.add_argument("--backends", nargs="+", default=["ort", "openvino"])
    parser.add_argument("--skip-distill", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    if not CT.is_file() or not SEG.is_file():
        print(f"missing {CT} or {SEG} (set EDGEMED_DATA)", file=sys.stderr)
        return 2
    RUNS.mkdir(parents=True, exist_ok=True)
    bundle = _build_bundle()
    started = time.perf_counter()
    metrics: dict[str, object] = {"cpus": os.cpu_count()}
    if not args.skip_distill:
        distill: dict[str, dict[str, dict[str, object]]] = {m: {} for m in MODES}
        for busy in args.busy:
            for mode in MODES:
                distill[mode][str(busy)] = case = distill_case(mode, busy, args.epochs)
                print(f"distill {mode} busy={busy}: {case['epoch_s']} s/epoch", file=sys.stderr, flush=True)
        _ratios(distill, "epoch_s")
        metrics["distill"] = distill
    for backend in args.backends:
        seg: dict[str, dict[str, dict[str, object]]] = {m: {} for m in MODES}
        for busy in args.busy:
            for mode in MODES:
                seg[mode][str(busy)] = case = segment_case(mode, busy, backend, bundle, args.repeats)
                print(f"segment {backend} {mode} busy={busy}: {case['volume_s']} s/volume "
                      f"({case['threads']} threads)", file=sys.stderr, flush=True)
        _ratios(seg, "volume_s")
        metrics[f"segment_{backend}"] = seg
    metrics["seconds"] = round(time.perf_counter() - started, 1)
    write_result(args.out, benchmark="busy_machine", script=__file__,
                 config=config_from_args(args, scan=CT, teacher=SEG, organ="liver", bundle=bundle,
                                         busy_process=f"python -c {BUSY!r}", modes=MODES),
                 metrics=metrics)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
