"""Peak memory and overhead of `Segmenter.segment`: the streamed loop (this checkout) beside the old
whole-volume one (`src/` of BEFORE_REF, the last commit with it, exported with `git archive` into a
temporary folder), in one run.

Every case runs in a fresh subprocess, which reports its own peak resident set (VmHWM from
/proc/self/status; the scan and bundle are loaded first, and the peak is also given above that
baseline after resetting it through /proc/self/clear_refs where the kernel allows).

Cases:
    big       a synthetic 512 x 512 x 600 CT at 0.8 mm (edgemed.phantom.make_phantom), one `segment`
    real      the real CT (../shared/data/totalseg/example_ct.nii.gz), `segment` --runs times: the
              median share of the time spent outside the backend's inference
    phantoms  phantoms on grids unlike the student's (in-plane resampling both ways)

Masks of the two versions are compared (identical voxels, Dice per label). The bundle is a default
liver student (unet2d, 3 mm, 9 context channels) distilled for 3 epochs on the real CT against the
fast TotalSegmentator labels and exported to runs/segment_memory/liver.edgemed (built once, ~40 s):
it is about the runtime, not accuracy.

    .venv/bin/python benchmarks/suite/segment_memory.py [--runs 7] [--threads N] [--before-ref REV]

Writes benchmarks/results/segment_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import DATA, RESULTS, ROOT, config_from_args, write_result  # noqa: E402

OUT = RESULTS / "segment_memory.json"
RUNS = ROOT / "runs" / "segment_memory"
CT = DATA / "totalseg" / "example_ct.nii.gz"
SEG = DATA / "totalseg" / "example_seg_fast_force_split.nii.gz"
BIG_SHAPE = (512, 512, 600)
BIG_SPACING = (0.8, 0.8, 0.8)
#: Phantom grids for the mask comparison: finer and coarser than the student's 3 mm, anisotropic.
#: The last commit with the whole-volume loop: its src/ is the "before" path.
BEFORE_REF = "e9c607cdfec642310536c8463de0543d2d53beb5"
PHANTOMS = (((160, 140, 60), (2.0, 2.0, 2.5)), ((96, 80, 48), (4.0, 4.0, 5.0)), ((200, 180, 40), (1.4, 1.6, 5.0)))


def _status(key: str) -> int:
    """A /proc/self/status field in bytes."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child(case: str, bundle: str, work: str, runs: int, threads: int | None) -> dict[str, object]:
    """One case, in this (fresh) process: what it measured, masks saved under `work`."""
    from edgemed import runtime
    from edgemed.io import Volume, read_volume
    from edgemed.phantom import PhantomConfig, make_phantom

    out: dict[str, object] = {}
    with runtime.load(bundle, backend="ort", threads=threads) as seg:
        if case == "big":
            array = np.load(Path(work) / "big_ct.npy")
            volume = Volume(array, np.load(Path(work) / "big_affine.npy"), "CT", "big_ct")
            out["rss_before_segment_mb"] = _status("VmRSS") / 2**20
            out["peak_before_segment_mb"] = _status("VmHWM") / 2**20
            out["peak_reset"] = _reset_peak()
            t0 = time.perf_counter()
            mask = seg.segment(volume)
            out["segment_s"] = time.perf_counter() - t0
            out["peak_rss_mb"] = _status("VmHWM") / 2**20
            out["timings_ms"] = seg.last_timings.to_json()
            np.save(Path(work) / f"mask_big_{os.environ['SEGMEM_TAG']}.npy", mask.array)
        elif case == "real":
            volume = read_volume(CT)
            rows = []
            for _ in range(runs + 1):  # the first call warms the backend up and is dropped
                mask = seg.segment(volume)
                t = seg.last_timings
                rows.append([t.preprocess_ms, t.inference_ms, t.postprocess_ms, t.total_ms])
            rows = rows[1:]
            med = np.median(np.array(rows), axis=0)
            out["median_ms"] = dict(zip(("preprocess", "inference", "postprocess", "total"),
                                        (round(float(v), 2) for v in med)))
            shares = [(r[3] - r[1]) / r[3] for r in rows]
            out["outside_inference_share_median"] = round(float(np.median(shares)), 4)
            out["outside_inference_share_runs"] = [round(s, 4) for s in shares]
            out["pre_plus_post_share_median"] = round(float(np.median([(r[0] + r[2]) / r[3] for r in rows])), 4)
            np.save(Path(work) / f"mask_real_{os.environ['SEGMEM_TAG']}.npy", mask.array)
        else:
            for i, (shape, spacing) in enumerate(PHANTOMS):
                ct = make_phantom(40 + i, PhantomConfig(shape=shape, spacing_mm=spacing))[0]
                np.save(Path(work) / f"mask_phantom{i}_{os.environ['SEGMEM_TAG']}.npy", seg.segment(ct).array)
    return out


def _run_child(case: str, src: Path, tag: str, args: argparse.Namespace, bundle: Path, work: Path) -> dict[str, object]:
    env = dict(os.environ, PYTHONPATH=str(src), SEGMEM_TAG=tag)
    cmd = [sys.executable, __file__, "--child", case, "--bundle", str(bundle), "--work", str(work),
           "--runs", str(args.runs)] + (["--threads", str(args.threads)] if args.threads else [])
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise SystemExit(f"{tag} {case} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _compare(work: Path, name: str) -> dict[str, object]:
    before, after = np.load(work / f"mask_{name}_before.npy"), np.load(work / f"mask_{name}_after.npy")
    dice = {}
    for label in sorted((set(np.unique(before)) | set(np.unique(after))) - {0}):
        a, b = before == label, after == label
        denom = int(a.sum()) + int(b.sum())
        dice[str(int(label))] = round(2 * int((a & b).sum()) / denom, 6) if denom else 1.0
    return {"identical": bool(np.array_equal(before, after)), "differing_voxels": int((before != after).sum()),
            "voxels": int(before.size), "dice_by_label": dice,
            "label_voxels": {str(int(k)): int((after == k).sum()) for k in np.unique(after) if k}}


def _build_bundle(path: Path) -> None:
    code = ("from pathlib import Path\n"
            "from edgemed.compress import DistillConfig, distill\n"
            "from edgemed.export import to_onnx\n"
            f"root = Path({str(path.parent)!r})\n"
            "cfg = DistillConfig(organs=('liver',), epochs=3, threads=1, ema_decay=None)\n"
            f"st = distill([{str(CT)!r}], cfg, root / 'student', teacher_predictions=[{str(SEG)!r}], progress=False)\n"
            f"to_onnx(st, {str(path)!r})\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def _make_big(work: Path) -> None:
    code = ("import numpy as np\n"
            "from edgemed.phantom import PhantomConfig, make_phantom\n"
            f"ct = make_phantom(7, PhantomConfig(shape={BIG_SHAPE}, spacing_mm={BIG_SPACING}))[0]\n"
            f"np.save({str(work / 'big_ct.npy')!r}, ct.array)\n"
            f"np.save({str(work / 'big_affine.npy')!r}, ct.affine)\n")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7, help="Timed segment calls on the real CT (median).")
    parser.add_argument("--threads", type=int, help="Backend threads (default: physical cores).")
    parser.add_argument("--before-ref", default=BEFORE_REF, help="The git revision whose src/ is the old path.")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--bundle", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.bundle, args.work, args.runs, args.threads)))
        return

    started = time.perf_counter()
    RUNS.mkdir(parents=True, exist_ok=True)
    bundle = RUNS / "liver.edgemed"
    if not bundle.exists():
        _build_bundle(bundle)
    if not (RUNS / "big_ct.npy").exists():
        _make_big(RUNS)
    load = [float(v) for v in os.getloadavg()]
    with tempfile.TemporaryDirectory(prefix="segmem_") as tmp:
        old = Path(tmp) / "before"
        old.mkdir()
        archive = subprocess.run(["git", "archive", args.before_ref, "src"], cwd=ROOT, capture_output=True, check=True)
        subprocess.run(["tar", "-x", "-C", str(old)], input=archive.stdout, check=True)
        versions = {"before": old / "src", "after": ROOT / "src"}
        for name in ("big_ct.npy", "big_affine.npy"):
            target = Path(tmp) / name
            try:
                os.link(RUNS / name, target)
            except OSError:
                shutil.copy(RUNS / name, target)
        work = Path(tmp)
        results: dict[str, dict[str, object]] = {"before": {}, "after": {}}
        for case in ("big", "real", "phantoms"):
            for tag, src in versions.items():  # side by side, alternating
                results[tag][case] = _run_child(case, src, tag, args, bundle, work)
                print(tag, case, json.dumps(results[tag][case])[:400], flush=True)
        masks = {name: _compare(work, name) for name in ("big", "real", *(f"phantom{i}" for i in range(len(PHANTOMS))))}
    load_after = [float(v) for v in os.getloadavg()]
    b, a = results["before"], results["after"]
    metrics = {
        "big_ct": {"shape": BIG_SHAPE, "spacing_mm": BIG_SPACING, "input_mb": float(np.prod(BIG_SHAPE)) * 4 / 2**20,
                   "before": b["big"], "after": a["big"],
                   "peak_rss_ratio_after_over_before": round(a["big"]["peak_rss_mb"] / b["big"]["peak_rss_mb"], 3)},
        "real_ct": {"scan": CT, "before": b["real"], "after": a["real"]},
        "masks_after_vs_before": masks,
        "load_average_1m": {"start": load[0], "end": load_after[0]},
        "measured_beside_other_processes": max(load[0], load_after[0]) > 0.5,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_result(args.out, benchmark="segment_memory", script=__file__,
                 config=config_from_args(args, bundle=bundle, phantoms=PHANTOMS, cpu_count=os.cpu_count()),
                 metrics=metrics)
    print(json.dumps(metrics, indent=2, default=str))


if __name__ == "__main__":
    main()
