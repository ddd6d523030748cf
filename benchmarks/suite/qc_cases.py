"""Does the runtime's quality control flag the masks that should not be trusted? (issue 20)

For two students (a default liver student and a joint liver/spleen/kidneys student, both distilled
on the real CT ../shared/data/totalseg/example_ct.nii.gz against the fast TotalSegmentator labels),
a case set is built from what ../shared/data holds and what can be made from it:

    clean       the held-out slices of the training CT (a crop around them, a wider crop, the whole scan)
    noise       Gaussian noise 30 / 60 / 100 / 150 HU on the held-out crop
    blur        in-plane Gaussian blur, sigma 1 / 2 voxels
    streaks     metal-like streaks (+-300 / +-800 HU lines through a point in the organ)
    contrast    organ contrast +40 / +80 / +150 HU (inside the teacher's organs)
    flip        left-right flipped array, header unchanged (the mask lands on the wrong side)
    fov         reconstruction field of view cut to a circle (radius 70 % / 50 % of the half-width)
    slope       wrong rescale slope: HU' = s (HU + 1024) - 1024, s = 0.5 / 2
    thick       resampled to 5 / 6 / 8 mm slices
    dcmqi       the dcmqi 3-slice CT (another scanner), its semi-automatic liver mask as reference
    mr          the abdominal MR passed as CT (--modality CT): wrong modality, must be flagged
    cta         the CTA crop (aorta): none of the organs is in it, must be flagged

Each (case, organ) unit records the student's Dice vs the teacher (held-out slices only) or the
reference, the QC verdict of that organ and its score (estimated Dice). A unit is *bad* when
its Dice < 0.85, its organ is absent, or the input is the wrong modality; *good* when Dice >= 0.90.
Reported: the share of bad units flagged (warn or fail; target >= 90 %), of good units flagged
(target <= 10 %), Spearman's rho of score vs Dice, and QC's share of `segment` time (<= 5 %).
Twice: with the bundle's own thresholds (as shipped), and with the score threshold chosen on a
calibration split of the cases (every other case) and judged on the rest.

Students are reused from runs/qc/ (distilled with --epochs, default 40 instead of 100, to fit the
time; calibrated with edgemed.compress.calibrate_qc when they predate QC) and exported to
runs/qc/<name>.edgemed.

    EDGEMED_THREADS=1 .venv/bin/python benchmarks/suite/qc_cases.py [--students liver joint4] [--epochs 40]

Writes benchmarks/results/qc_cases.json.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import DATA, RESULTS, ROOT, write_result  # noqa: E402

OUT = RESULTS / "qc_cases.json"
RUNS = ROOT / "runs" / "qc"
CT = DATA / "totalseg" / "example_ct.nii.gz"
SEG = DATA / "totalseg" / "example_seg_fast_force_split.nii.gz"
MR = DATA / "totalseg" / "example_mr_sm.nii.gz"
MR_SEG = DATA / "totalseg" / "example_seg_mr.nii.gz"
CTA = DATA / "totalseg" / "aorta_report" / "test_result" / "models" / "ct_cropped.nii.gz"
DCMQI_CT = DATA / "dcmqi_ct3slice" / "ct"
DCMQI_LIVER = DATA / "dcmqi_ct3slice" / "seg" / "liver_seg.nrrd"
STUDENTS = {"liver": ("liver",), "joint4": ("liver", "spleen", "kidney_left", "kidney_right")}
BAD_BELOW, GOOD_FROM = 0.85, 0.90


def ensure_bundle(name: str, epochs: int) -> Path:
    """runs/qc/<name>.edgemed with QC reference ranges (distilled, calibrated, exported as needed).

    The QC reference is always measured anew with this checkout's calibration (`calibrate_qc`, which
    runs what distill runs after training; seconds) into runs/qc/<name>_qc, so both students are
    calibrated alike even when one was distilled by an older edgemed; the bundle is re-exported when
    its QC record differs.
    """
    from edgemed.artifacts import OnnxBundle
    from edgemed.compress import DistillConfig, calibrate_qc, distill
    from edgemed.export import OnnxExportConfig, to_onnx

    bundle = RUNS / f"{name}.edgemed"
    calibrated = RUNS / f"{name}_qc"
    student = RUNS / name
    if not (student / "manifest.json").is_file():
        distill([CT], DistillConfig(organs=STUDENTS[name], epochs=epochs, seed=0), student, teacher_predictions=[SEG],
                progress=False)
    ckpt = calibrate_qc(student, [CT], teacher_predictions=[SEG], out=calibrated, overwrite=True)
    if not (bundle.is_dir() and OnnxBundle.load(bundle).meta.qc == ckpt.meta.qc):
        to_onnx(ckpt, bundle, OnnxExportConfig(), overwrite=True)
    return bundle


def build_cases(k0: int, k1: int, organ_ids: list[int]) -> list[dict[str, Any]]:
    """The case set: volume, reference labels, the slices Dice is measured on, and flags."""
    from edgemed.io import Volume, read_labels, read_volume, resample_array

    ct = read_volume(CT)
    seg = read_labels(SEG, like=ct)
    hu = ct.array.astype(np.float32)
    ref_all = np.asarray(seg.array)
    z = hu.shape[2]

    def crop(margin: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
        a, b = max(0, k0 - margin), min(z, k1 + 1 + margin)
        affine = ct.affine.copy()
        affine[:3, 3] = ct.affine[:3, :3] @ np.array([0, 0, a]) + ct.affine[:3, 3]
        return hu[:, :, a:b].copy(), ref_all[:, :, a:b].copy(), affine, a

    cases: list[dict[str, Any]] = []

    def add(name: str, family: str, array: np.ndarray, affine: np.ndarray, ref: np.ndarray | None,
            eval_ks: np.ndarray | None, **flags: Any) -> None:
        cases.append({"name": name, "family": family, "volume": Volume(array.astype(np.float32), affine, "CT", name),
                      "ref": ref, "eval_ks": eval_ks, **flags})

    base, base_ref, base_aff, a = crop(8)
    held = np.arange(k0 - a, k1 + 1 - a)
    add("heldout_crop", "clean", base, base_aff, base_ref, held)
    wide, wide_ref, wide_aff, aw = crop(20)
    add("heldout_wide", "clean", wide, wide_aff, wide_ref, np.arange(k0 - aw, k1 + 1 - aw))
    add("full_scan", "clean", hu.copy(), ct.affine, ref_all, np.arange(k0, k1 + 1))
    rng = np.random.default_rng(0)
    for sigma in (30, 60, 100, 150):
        add(f"noise_{sigma}hu", "noise", base + rng.normal(0, sigma, base.shape).astype(np.float32), base_aff,
            base_ref, held)
    for sigma in (1.0, 2.0):
        add(f"blur_{sigma:g}vox", "blur", _blur(base, sigma), base_aff, base_ref, held)
    organ_mask = np.isin(base_ref, organ_ids)
    for amp in (300, 800):
        add(f"streaks_{amp}hu", "streaks", base + _streaks(base.shape, organ_mask, amp, rng), base_aff, base_ref,
            held)
    for shift in (40, 80, 150):
        add(f"contrast_+{shift}hu", "contrast", base + shift * organ_mask.astype(np.float32), base_aff, base_ref, held)
    add("flip_lr", "flip", base[::-1].copy(), base_aff, base_ref, held)
    add("flip_lr_wide", "flip", wide[::-1].copy(), wide_aff, wide_ref, np.arange(k0 - aw, k1 + 1 - aw))
    for share in (0.7, 0.5):
        add(f"fov_{int(share * 100)}pct", "fov", _fov(base, share), base_aff, base_ref, held)
    for slope in (0.5, 2.0):
        add(f"slope_{slope:g}", "slope", slope * (base + 1024.0) - 1024.0, base_aff, base_ref, held)
    for mm in (5.0, 6.0, 8.0):
        n = max(2, int(round(wide.shape[2] * 3.0 / mm)))
        array = resample_array(wide, (wide.shape[0], wide.shape[1], n), order="linear")
        ref = resample_array(wide_ref, (wide.shape[0], wide.shape[1], n), order="nearest")
        affine = wide_aff.copy()
        f = wide.shape[2] / n
        affine[:3, 3] += wide_aff[:3, 2] * (f - 1) / 2  # half-pixel convention: the first slice centre moves
        affine[:3, 2] *= f
        zs = (np.arange(n) + 0.5) * wide.shape[2] / n - 0.5   # slice centres in the wide crop's index
        ks = np.flatnonzero((zs >= k0 - aw - 0.5) & (zs <= k1 - aw + 0.5))
        add(f"thick_{mm:g}mm", "thick", array, affine, ref, ks)
    if DCMQI_CT.is_dir():
        dc = read_volume(DCMQI_CT)
        liver = read_labels(DCMQI_LIVER, like=dc).array
        # The dcmqi reference holds the liver only (id 1 there; 5 in TotalSegmentator's map).
        add("dcmqi_ct", "dcmqi", dc.array.astype(np.float32), dc.affine, np.where(liver == 1, 5, 0).astype(np.uint8),
            None, only_organs=("liver",))
    if MR.is_file():
        mr = read_volume(MR, modality="MR")
        add("mr_as_ct", "mr", mr.array.astype(np.float32), mr.affine, read_labels(MR_SEG, like=mr).array, None,
            wrong_modality=True)
    if CTA.is_file():
        cta = read_volume(CTA)
        add("cta_crop", "cta", cta.array.astype(np.float32), cta.affine, np.zeros(cta.shape, np.uint8), None)
    return cases


def _blur(array: np.ndarray, sigma: float) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(array, sigma=(sigma, sigma, 0.0)).astype(np.float32)


def _streaks(shape: tuple[int, ...], organ: np.ndarray, amp: float, rng: np.random.Generator) -> np.ndarray:
    """Bright/dark lines through a point in the organ, in every slice (a metal artefact's look)."""
    x, y, z = shape
    pts = np.argwhere(organ)
    cx, cy = (pts[:, 0].mean(), pts[:, 1].mean()) if len(pts) else (x / 2, y / 2)
    gx, gy = np.mgrid[0:x, 0:y]
    angle = np.arctan2(gy - cy, gx - cx)
    pattern = np.zeros((x, y), np.float32)
    for theta in rng.uniform(0, np.pi, 6):
        d = np.abs(np.sin(angle - theta))
        pattern += np.where(d < 0.03, 1.0, 0.0) * (1 if rng.random() < 0.5 else -1)
    return (amp * pattern)[:, :, None].repeat(z, axis=2)


def _fov(array: np.ndarray, share: float) -> np.ndarray:
    x, y, _ = array.shape
    gx, gy = np.mgrid[0:x, 0:y]
    r = share * min(x, y) / 2
    outside = (gx - x / 2) ** 2 + (gy - y / 2) ** 2 > r * r
    out = array.copy()
    out[outside] = -1024.0
    return out


def run_student(name: str, epochs: int, timing_runs: int) -> dict[str, Any]:
    from edgemed import runtime
    from edgemed.artifacts import OnnxBundle, StudentCheckpoint
    from edgemed.io import read_volume
    from edgemed.metrics import dice

    t0 = time.perf_counter()
    bundle_path = ensure_bundle(name, epochs)
    prep_s = time.perf_counter() - t0
    bundle = OnnxBundle.load(bundle_path)
    ckpt = StudentCheckpoint.load(RUNS / name)
    k0, k1 = ckpt.meta.validation.per_scan[0]["holdout_slices"]
    organs = bundle.organs
    units: list[dict[str, Any]] = []
    cases = build_cases(int(k0), int(k1), [o.label_id for o in organs])
    with runtime.load(bundle_path, backend="ort") as seg:
        for i, case in enumerate(cases):
            mask, qc = seg.segment_with_qc(case["volume"])
            tm = seg.last_timings
            for organ, oq in zip(organs, qc.organs):
                if case.get("only_organs") and organ.name not in case["only_organs"]:
                    continue
                ref = case["ref"] == organ.label_id
                pred = mask.array == organ.label_id
                if case["eval_ks"] is not None:
                    ref, pred = ref[:, :, case["eval_ks"]], pred[:, :, case["eval_ks"]]
                absent = not case["ref"].__eq__(organ.label_id).any()
                if not ref.any() and not absent:
                    continue  # the organ is in the case but not on the slices Dice is measured on
                d = None if absent else float(dice(pred, ref))
                rule_flag = any(r.severity in ("warn", "fail") and r.check != "score" and r.organ in (None, organ.name)
                                for r in qc.reasons)
                units.append({
                    "case": case["name"], "family": case["family"], "organ": organ.name,
                    "split": "calibration" if i % 2 == 0 else "test",
                    "dice": None if d is None else round(d, 4), "absent": absent,
                    "wrong_modality": bool(case.get("wrong_modality")),
                    "verdict": oq.verdict, "case_verdict": qc.verdict,
                    "score": None if oq.score is None else round(oq.score, 4),
                    "rule_flag": rule_flag,
                    "reasons": [r.message for r in qc.reasons if r.organ in (None, organ.name)
                                and r.severity in ("warn", "fail")],
                    "qc_ms": round(tm.qc_ms, 2), "segment_ms": round(tm.total_ms, 2),
                    "features": {k: (round(float(v), 4) if isinstance(v, (float, np.floating)) else v)
                                 for k, v in oq.features.items()},
                })
        # QC's share of segment time on the whole training CT (the realistic case), repeated.
        full = read_volume(CT)
        shares, qc_ms, total_ms = [], [], []
        for _ in range(timing_runs):
            seg.segment_with_qc(full)
            tm = seg.last_timings
            shares.append(tm.qc_ms / tm.total_ms)
            qc_ms.append(tm.qc_ms)
            total_ms.append(tm.total_ms)
    for u in units:
        u["bad"] = bool(u["absent"] or u["wrong_modality"] or (u["dice"] is not None and u["dice"] < BAD_BELOW))
        u["good"] = bool(not u["bad"] and u["dice"] is not None and u["dice"] >= GOOD_FROM)
        u["flagged"] = u["verdict"] != "ok"
    threshold = _choose_threshold([u for u in units if u["split"] == "calibration"])
    for u in units:
        u["flagged_tuned"] = bool(u["rule_flag"] or (u["score"] if u["score"] is not None else 0.0) < threshold)
    test = [u for u in units if u["split"] == "test"]
    cases_summary = _case_summary(units)
    case_shares = [u["qc_ms"] / u["segment_ms"] for u in units if u["segment_ms"] > 0]
    return {
        "bundle": str(bundle_path.relative_to(ROOT)), "organs": [o.name for o in organs],
        "heldout_slices": [int(k0), int(k1)], "heldout_dice": dict(ckpt.meta.validation.dice),
        "epochs": ckpt.meta.training.epochs, "prepare_s": round(prep_s, 1),
        "score_model": bundle.meta.qc.score if bundle.meta.qc else None,
        "thresholds_shipped": bundle.meta.qc.thresholds if bundle.meta.qc else None,
        "calibration": bundle.meta.qc.method if bundle.meta.qc else None,
        "as_shipped": {"all": _summary(units, "flagged"), "test": _summary(test, "flagged")},
        "cases_as_shipped": cases_summary,
        "tuned": {"score_threshold": threshold, "chosen_on": "calibration split (even-numbered cases)",
                  "test": _summary(test, "flagged_tuned"), "all": _summary(units, "flagged_tuned")},
        "qc_share_of_segment": {"full_scan_median": float(np.median(shares)), "full_scan_qc_ms": qc_ms,
                                "full_scan_segment_ms": total_ms, "cases_median": float(np.median(case_shares)),
                                "cases_max": float(np.max(case_shares))},
        "units": units,
    }


def _summary(units: list[dict[str, Any]], key: str) -> dict[str, Any]:
    from edgemed.runtime import spearman

    bad = [u for u in units if u["bad"]]
    good = [u for u in units if u["good"]]
    scored = [u for u in units if u["dice"] is not None and u["score"] is not None]
    return {"units": len(units), "bad": len(bad), "good": len(good),
            "bad_flagged": sum(u[key] for u in bad), "good_flagged": sum(u[key] for u in good),
            "share_bad_flagged": round(sum(u[key] for u in bad) / len(bad), 4) if bad else None,
            "share_good_flagged": round(sum(u[key] for u in good) / len(good), 4) if good else None,
            "spearman_score_vs_dice": _r(spearman(np.array([u["score"] for u in scored]),
                                                  np.array([u["dice"] for u in scored]))),
            "missed": [f"{u['case']}/{u['organ']}" for u in bad if not u[key]],
            "false_flags": [f"{u['case']}/{u['organ']}" for u in good if u[key]]}


def _case_summary(units: list[dict[str, Any]]) -> dict[str, Any]:
    """Per scan, as a user sees it: the overall verdict; a case is bad if any organ is, good if every organ is."""
    by_case: dict[str, list[dict[str, Any]]] = {}
    for u in units:
        by_case.setdefault(u["case"], []).append(u)
    bad = [c for c, us in by_case.items() if any(u["bad"] for u in us)]
    good = [c for c, us in by_case.items() if all(u["good"] for u in us)]
    flagged = {c for c, us in by_case.items() if us[0]["case_verdict"] != "ok"}
    return {"cases": len(by_case), "bad": len(bad), "good": len(good),
            "share_bad_flagged": round(len(flagged & set(bad)) / len(bad), 4) if bad else None,
            "share_good_flagged": round(len(flagged & set(good)) / len(good), 4) if good else None,
            "missed": sorted(set(bad) - flagged), "false_flags": sorted(flagged & set(good))}


def _choose_threshold(units: list[dict[str, Any]]) -> float:
    """The score threshold that flags the most bad units while flagging at most 10 % of good ones (calibration split)."""
    best, best_t = None, 0.0
    for t in np.round(np.arange(0.50, 0.991, 0.01), 2):
        flag = lambda u: u["rule_flag"] or (u["score"] if u["score"] is not None else 0.0) < t  # noqa: E731
        bad = [u for u in units if u["bad"]]
        good = [u for u in units if u["good"]]
        recall = sum(map(flag, bad)) / len(bad) if bad else 1.0
        false = sum(map(flag, good)) / len(good) if good else 0.0
        key = (false <= 0.10, recall, -false)
        if best is None or key > best:
            best, best_t = key, float(t)
    return best_t


def _r(v: float | None) -> float | None:
    return None if v is None else round(v, 4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", nargs="+", default=list(STUDENTS), choices=list(STUDENTS))
    parser.add_argument("--epochs", type=int, default=40, help="Epochs for students that must be distilled.")
    parser.add_argument("--timing-runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    results = {name: run_student(name, args.epochs, args.timing_runs) for name in args.students}
    for name, r in results.items():
        print(f"{name}: shipped {r['as_shipped']['all']['share_bad_flagged']} bad / "
              f"{r['as_shipped']['all']['share_good_flagged']} good flagged, rho "
              f"{r['as_shipped']['all']['spearman_score_vs_dice']}; tuned t={r['tuned']['score_threshold']} test "
              f"{r['tuned']['test']['share_bad_flagged']} / {r['tuned']['test']['share_good_flagged']}; "
              f"QC share {r['qc_share_of_segment']['full_scan_median']:.3%}")
    config = {"students": args.students, "epochs_if_distilled": args.epochs, "timing_runs": args.timing_runs,
              "reduced": "students distilled for 40 epochs (edgemed distill default: 100) with default settings on "
                         "1 thread, to fit the time; joint4 uses the distill defaults, not the joint recipe's mild "
                         "augmentation",
              "bad": f"Dice < {BAD_BELOW}, organ absent, or wrong modality", "good": f"Dice >= {GOOD_FROM}",
              "dice_scope": "held-out slices of the training CT vs the teacher (fast TotalSegmentator); dcmqi: its "
                            "semi-automatic liver mask; mr: total_mr labels (same ids for these organs)",
              "split": "cases alternate calibration / test in the order listed (units of one case stay together)"}
    write_result(args.out, benchmark="qc_cases", script=__file__, config=config, metrics=results)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
