"""Calibrate the runtime's quality control at distill time: reference ranges and a Dice estimator.

The student's `QCRecord` holds what the runtime QC compares a new scan and mask with: the
training scans' spacing and intensities, the teacher's organ volumes, components and positions,
the student's own confidence on its held-out slices, and a small logistic model from confidence
features to Dice, fitted on the student's behaviour on held-out and training slices, clean and
perturbed, against the teacher. Nothing is set per organ.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgemed.artifacts import STUDENT_KIND, STUDENT_SCHEMA, OrganChannel, QCRecord, StudentCheckpoint, write_artifact
from edgemed.compress._config import DistillConfig, config_from_dict
from edgemed.compress._slices import ScanSlices
from edgemed.errors import ConfigError
from edgemed.io import body_box
from edgemed.runtime import (ConfidenceStats, apply_score_model, fit_score_model, intensity_profile, organ_geometry,
                             score_features)

__all__ = ["calibrate_qc", "qc_record"]

#: Perturbations of the student-grid image the estimator is fitted on (HU where the spec is CT).
PERTURBATIONS: tuple[tuple[str, float], ...] = (
    ("clean", 0.0), ("noise", 40.0), ("noise", 90.0), ("noise", 130.0), ("noise", 180.0), ("blur", 1.2),
    ("blur", 1.8), ("blur", 2.5), ("organ_shift", 70.0), ("organ_shift", 140.0), ("organ_shift", 200.0),
    ("global_shift", -80.0), ("slice_average", 1.0),
)
#: Verdict thresholds on the estimated Dice: warn where the calibration samples say Dice < BAD_DICE is
#: likely (chosen per student, within WARN_RANGE; WARN_BELOW without bad samples), fail far below.
BAD_DICE, WARN_BELOW, FAIL_BELOW = 0.85, 0.85, 0.6
WARN_RANGE = (0.80, 0.97)
RECALL = 0.9  # the share of bad masks QC should flag (issue 20)


def qc_record(net: Any, slices: Sequence[ScanSlices], organs: Sequence[OrganChannel], config: DistillConfig,
              teacher: Any = None, seed: int = 0) -> QCRecord:
    """Measure a trained student's QC reference on its training data (the held-out part included).

    Args:
        net: The trained torch student (eval mode).
        slices: The scans as distillation prepared them (teacher labels, held-out split).
        organs: The student's organs.
        config: The distillation recipe (preprocessing).
        teacher: The teacher's identity (named in the method).
        seed: Seeds the noise perturbations.
    """
    from edgemed.models import predict_slices

    spec = config.preprocess
    unit = 1.0 / (spec.window_hu[1] - spec.window_hu[0]) if spec.modality == "CT" else 1.0 / 700.0
    rng = np.random.default_rng(seed)
    rows, dice, clean = [], [], {o.name: [] for o in organs}
    for sc in slices:
        for ks, part in _slice_sets(sc):
            for kind, amount in PERTURBATIONS:
                image = _perturb(sc.image, sc.hard, kind, amount * unit, rng)
                probs = predict_slices(net, image, ks, spec.context_slices, step=sc.geom.context_step)
                stats = ConfidenceStats()
                stats.observe(probs)
                arg, ref = probs.argmax(1), sc.hard[ks]
                for o in organs:
                    p, r = arg == o.channel, ref == o.channel
                    total = int(p.sum()) + int(r.sum())
                    if not int(r.sum()):
                        continue  # the organ is not in these slices: no Dice to learn from
                    conf = stats.features(o.channel)
                    feats = score_features(conf)
                    if feats is None:
                        feats = np.array([-9.2, -9.2, 1.0])  # nothing predicted: the least confident row
                    rows.append(feats)
                    dice.append(2.0 * int(np.logical_and(p, r).sum()) / total)
                    if kind == "clean" and part == "held-out" and "mean_max_probability" in conf:
                        clean[o.name].append(conf)
    if len(rows) < 4:
        raise ConfigError("too few slices with the organ to calibrate QC (need a held-out or training block "
                          "holding it); give more scans or a larger holdout_fraction.")
    score = fit_score_model(np.array(rows), np.array(dice))
    fitted = np.array([apply_score_model(score, r) for r in rows])
    warn_below = _warn_threshold(fitted, np.array(dice))
    organ_refs = _teacher_references(slices, organs)
    for o in organs:
        if clean[o.name]:
            organ_refs[o.name]["confidence"] = {k: float(np.mean([c[k] for c in clean[o.name]]))
                                                for k in clean[o.name][0]}
    spacings = np.array([sc.volume.spacing_mm for sc in slices])
    profiles = [intensity_profile(sc.volume)["fractions"] for sc in slices]
    teacher_name = teacher.get("name") if isinstance(teacher, dict) else None
    method = (f"measured after distillation on {len(slices)} scan(s) ({', '.join(sc.name for sc in slices)}): organ "
              f"volume, components and position from the teacher{f' ({teacher_name})' if teacher_name else ''} on "
              f"each whole scan; the Dice estimator fitted on {len(rows)} samples (organ x slice block x "
              "perturbation): the student on its held-out slices and an equally long block of training slices, "
              "clean and perturbed (noise 40/90/130/180 HU, in-plane blur 1.2/1.8/2.5 px, organ +70/+140/+200 HU, "
              "all -80 HU, "
              "3-slice averaging), Dice vs the teacher on the student grid; warn_below: the score under which "
              f"{RECALL:.0%} of those samples with Dice < {BAD_DICE} fall (kept in {WARN_RANGE[0]}–{WARN_RANGE[1]})")
    return QCRecord(
        method=method, scans=[sc.name for sc in slices], samples=len(rows),
        spacing_mm={"inplane": [float(spacings[:, :2].min()), float(spacings[:, :2].max())],
                    "thickness": [float(spacings[:, 2].min()), float(spacings[:, 2].max())]},
        intensity={"modality": spec.modality,
                   "fractions": {k: float(np.mean([p.get(k, 0.0) for p in profiles])) for k in profiles[0]}},
        organs=organ_refs, score=score, thresholds={"warn_below": warn_below, "fail_below": FAIL_BELOW},
    )


def calibrate_qc(student: StudentCheckpoint | str | os.PathLike[str], scans: Sequence[str | os.PathLike[str]], *,
                 teacher_predictions: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
                 overwrite: bool = False, progress: bool = False) -> StudentCheckpoint:
    """Add QC reference ranges to a student distilled before QC existed (what distill now does itself).

    The scans and teacher predictions must be the ones it was distilled on: the held-out split is
    rebuilt from its recorded recipe. The weights are copied unchanged; export the result again
    so the bundle carries the ranges.

    Args:
        student: The student checkpoint.
        scans, teacher_predictions: Its training scans and the teacher's stored predictions, in order.
        out: The calibrated checkpoint to write (same digest: the weights are unchanged, only the metadata).
        overwrite: Replace a student checkpoint at `out`.

    Example:
        >>> calibrate_qc("runs/liver", ["ct.nii.gz"], teacher_predictions=["seg.nii.gz"], out="runs/liver_qc")
    """
    from edgemed.artifacts import check_output
    from edgemed.compress._distill import _load_data
    from edgemed.io import load_label_map
    from edgemed.models import load_student

    ckpt = student if isinstance(student, StudentCheckpoint) else StudentCheckpoint.load(student)
    if ckpt.meta.recipe is None:
        raise ConfigError(f"{ckpt.path} records no distillation recipe, so its held-out split cannot be rebuilt.")
    check_output(out, kind=STUDENT_KIND, overwrite=overwrite, inputs=[*scans, *teacher_predictions, ckpt.path])
    config = config_from_dict({k: v for k, v in ckpt.meta.recipe.items()})
    ids = load_label_map(config.label_map).resolve(config.organs)
    slices, _, _ = _load_data(scans, None, teacher_predictions, None, ids, config, progress)
    record = qc_record(load_student(ckpt).eval(), slices, ckpt.organs, config, ckpt.meta.teacher, seed=config.seed)
    payload = {name: (ckpt.path / name).read_bytes() for name in ckpt.manifest.files}  # copies: a Path would be moved
    write_artifact(out, kind=STUDENT_KIND, schema_version=STUDENT_SCHEMA, payload=payload, overwrite=overwrite,
                   metadata=ckpt.meta.with_(qc=record).to_json(), parent=ckpt.manifest.parent)
    return StudentCheckpoint.load(out)


def _warn_threshold(scores: np.ndarray, dice: np.ndarray) -> float:
    """The score below which to warn: just above RECALL of the calibration samples with Dice < BAD_DICE."""
    bad = scores[dice < BAD_DICE]
    if bad.size < 3:
        return WARN_BELOW
    t = float(np.quantile(bad, RECALL)) + 0.005
    return round(min(WARN_RANGE[1], max(WARN_RANGE[0], t)), 3)


def _slice_sets(sc: ScanSlices) -> list[tuple[np.ndarray, str]]:
    """The held-out block and an equally long block of training slices holding the organ."""
    out = []
    if sc.val_ks.size:
        out.append((sc.val_ks, "held-out"))
    organ_train = np.intersect1d(sc.train_ks, sc.organ_ks)
    n = max(8, int(sc.val_ks.size) or 16)
    if organ_train.size:
        mid = organ_train[len(organ_train) // 2]
        block = organ_train[np.abs(organ_train - mid).argsort()[:n]]
        out.append((np.sort(block), "training"))
    return out


def _perturb(image: np.ndarray, hard: np.ndarray, kind: str, amount: float, rng: np.random.Generator) -> np.ndarray:
    """`image` (Z, H, W, the student's [0, 1] scale) perturbed; amount in that scale (blur: pixels)."""
    if kind == "clean":
        return image
    if kind == "noise":
        return np.clip(image + rng.normal(0.0, amount, image.shape).astype(np.float32), 0.0, 1.0)
    if kind == "blur":
        return _blur_inplane(image, amount)
    if kind == "organ_shift":
        return np.clip(image + amount * (hard > 0).astype(np.float32), 0.0, 1.0)
    if kind == "global_shift":
        return np.clip(image + np.float32(amount), 0.0, 1.0)
    if kind == "slice_average":
        out = image.copy()
        out[1:-1] = (image[:-2] + image[1:-1] + image[2:]) / 3.0
        return out
    raise ValueError(kind)


def _blur_inplane(image: np.ndarray, sigma_px: float) -> np.ndarray:
    radius = max(1, int(round(3 * sigma_px)))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    kernel = np.exp(-0.5 * (x / sigma_px) ** 2)
    kernel /= kernel.sum()
    out = image.astype(np.float32, copy=True)
    for axis in (1, 2):
        padded = np.pad(out, [(radius, radius) if a == axis else (0, 0) for a in range(3)], mode="edge")
        acc = np.zeros_like(out)
        n = out.shape[axis]
        for i, w in enumerate(kernel):
            acc += w * np.take(padded, np.arange(i, i + n), axis=axis)
        out = acc
    return out


def _teacher_references(slices: Sequence[ScanSlices], organs: Sequence[OrganChannel]) -> dict[str, Any]:
    refs: dict[str, Any] = {}
    for o in organs:
        geos = []
        for sc in slices:
            box = sc.geom.crop_xy if sc.geom.crop_xy is not None else body_box(sc.volume, 0.0)
            geo = organ_geometry(sc.native_mask == o.channel, sc.volume.spacing_mm, box,
                                 sc.volume.array if sc.volume.modality == "CT" else None)
            if geo["voxels"]:
                geos.append(geo)
        if not geos:
            continue
        refs[o.name] = {
            "volume_ml": [float(min(g["volume_ml"] for g in geos)), float(max(g["volume_ml"] for g in geos))],
            "components": int(max(g["components"] for g in geos)),
            "largest_share": float(min(g["largest_share"] for g in geos)),
            "side": float(np.mean([g["side"] for g in geos])), "ap": float(np.mean([g["ap"] for g in geos])),
            "z_extent_mm": float(max(g["z_extent_mm"] for g in geos)),
            "ml_per_cm": float(min(g["ml_per_cm"] for g in geos)),
            "outside_air_share": float(max(g.get("outside_air_share", 0.0) for g in geos)),
            "touches_edge": bool(any(g["touches_edge"] for g in geos)),
        }
    return refs
