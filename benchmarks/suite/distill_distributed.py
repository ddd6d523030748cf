"""Distillation wall time in 1 vs N processes (torchrun, gloo) on the same real CT and teacher store.

Teacher: TotalSegmentator's fast-model labels on `example_ct.nii.gz`
(`example_seg_fast_force_split.nii.gz`, see ../shared/data/totalseg/README.md), put once into a
teacher store with `precompute_teacher`; both runs then stream it (`edgemed distill --teacher-store`).
1 process is the plain command; N processes are `torchrun --standalone --nproc_per_node N -m edgemed
distill ...` with the same options, `--threads 1` per process (OMP_NUM_THREADS=1). Wall time
includes process start, reading the scan and the store, training, validation and writing the
student; `train_seconds` is the training loop alone (from the student's manifest). Dice is vs the
teacher on the held-out block of liver slices.

    .venv/bin/python benchmarks/suite/distill_distributed.py [--epochs 12] [--procs 1 2] [--student unet2d]

Writes benchmarks/results/distill_distributed.json. On a 2-core machine little gain is expected
(and none when another job holds a core); the figures are reported as measured.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import DATA, RESULTS, config_from_args, write_result  # noqa: E402

from edgemed.compress import TeacherStoreConfig, precompute_teacher  # noqa: E402
from edgemed.models.teachers import StoredPredictions  # noqa: E402

TOTALSEG = DATA / "totalseg"
OUT = RESULTS / "distill_distributed.json"


def _run(procs: int, ct: Path, store: Path, out: Path, args: argparse.Namespace) -> dict[str, object]:
    distill = ["distill", "--scans", str(ct), "--teacher-store", str(store), "--organ", "liver", "--out", str(out),
               "--student", args.student, "--epochs", str(args.epochs), "--seed", str(args.seed), "--threads", "1",
               "--quiet", "--json"]
    launcher = [sys.executable, "-m", "edgemed"] if procs == 1 else \
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(procs), "-m", "edgemed"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    done = subprocess.run(launcher + distill, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{procs} process(es) failed:\n{done.stderr[-4000:]}")
    result = json.loads(done.stdout)
    return {"processes": procs, "wall_seconds": round(wall, 1),
            "train_seconds": result["training"]["seconds"],
            "dice_vs_teacher_heldout": result["validation"]["dice"]["liver"],
            "distributed": result["training"].get("distributed"),
            "load_average_before": round(load, 2)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--student", default="unet2d")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    ct, seg = TOTALSEG / "example_ct.nii.gz", TOTALSEG / "example_seg_fast_force_split.nii.gz"
    if not ct.exists():
        print(f"real data not found at {TOTALSEG}; set EDGEMED_DATA", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        t0 = time.perf_counter()
        precompute_teacher([ct], StoredPredictions([(ct, seg)]), tmp / "store", TeacherStoreConfig(organs=("liver",)),
                           progress=False)
        store_s = time.perf_counter() - t0
        runs = []
        for procs in args.procs:
            runs.append(_run(procs, ct, tmp / "store", tmp / f"liver-{procs}", args))
            print(json.dumps(runs[-1]), file=sys.stderr)
    base = next((r for r in runs if r["processes"] == 1), None)
    for r in runs:
        r["speedup_wall_vs_1"] = round(base["wall_seconds"] / r["wall_seconds"], 2) if base else None  # type: ignore[operator]
        r["speedup_train_vs_1"] = round(base["train_seconds"] / r["train_seconds"], 2) if base else None  # type: ignore[operator]
    import torch

    config = config_from_args(
        args, teacher="TotalSegmentator fast model labels (example_seg_fast_force_split.nii.gz) via a teacher store",
        scan="example_ct.nii.gz (122x101x112, 3 mm)", organ="liver", threads_per_process=1, backend="gloo")
    metrics = {"store_seconds": round(store_s, 1), "runs": runs}
    out = write_result(args.out, benchmark="distill_distributed", script=__file__, config=config, metrics=metrics,
                       host={"torch": torch.__version__})
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
