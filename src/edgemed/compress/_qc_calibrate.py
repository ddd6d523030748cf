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

__all__ = ["calibrate_qc", "qc_record", "qc_samples"]

#: Perturbations of the student-grid image the estimator is fitted on: (kind, amount). Amounts are HU
#: for noise and shifts (scaled to the student's intensity scale), pixels for blur, a factor for
#: contrast, slices for averaging. Chosen as what differs between scanners and protocols (noise,
#: sharpness, contrast phase, calibration, slice thickness), not as the QC benchmark's corruptions.
PERTURBATIONS: tuple[tuple[str, float], ...] = (
    ("clean", 0.0), ("noise", 30.0), ("noise", 60.0), ("noise", 90.0), ("noise", 130.0), ("noise", 180.0),
    ("blur", 1.0), ("blur", 1.5), ("blur", 2.0), ("blur", 3.0),
    ("organ_shift", 40.0), ("organ_shift", 70.0), ("organ_shift", 100.0), ("organ_shift", 140.0),
    ("organ_shift", 200.0), ("global_shift", -80.0), ("global_shift", 80.0), ("contrast", 0.8), ("contrast", 1.25),
    ("slice_average", 3.0), ("slice_average", 5.0),
)
_IN_HU = ("noise", "organ_shift", "global_shift")
#: Verdict thresholds on the estimated Dice. warn_below = BAD_DICE + the RECALL quantile of the
#: estimator's cross-validated overestimate (score - Dice) on the calibration samples with Dice >=
#: MARGIN_FROM (where a mask is near the line), kept in WARN_RANGE: a mask whose true Dice is below
#: BAD_DICE then scores under warn_below with probability about RECALL. Fail far below.
BAD_DICE, WARN_BELOW, FAIL_BELOW = 0.85, 0.85, 0.6
WARN_RANGE = (0.85, 0.95)
MARGIN_FROM = 0.5
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
    rows, dice, clean, _ = qc_samples(net, slices, organs, config, seed=seed)
    spec = config.preprocess
    if len(rows) < 4:
        raise ConfigError("too few slices with the organ to calibrate QC (need a held-out or training block "
                          "holding it); give more scans or a larger holdout_fraction.")
    score = fit_score_model(np.array(rows), np.array(dice))
    warn_below, margin = _warn_threshold(np.array(rows), np.array(dice))
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
              "clean and perturbed (noise 30-180 HU, in-plane blur 1-3 px, organ +40 to +200 HU, all -80/+80 HU, "
              "contrast x0.8/x1.25, 3- and 5-slice averaging), Dice vs the teacher on the student grid; "
              f"warn_below = {BAD_DICE} + {margin:.3f}, the {RECALL:.0%} quantile of the estimator's 5-fold "
              f"cross-validated overestimate (score - Dice) on the samples with Dice >= {MARGIN_FROM} "
              f"(kept in {WARN_RANGE[0]}-{WARN_RANGE[1]})")
    return QCRecord(
        method=method, scans=[sc.name for sc in slices], samples=len(rows),
        spacing_mm={"inplane": [float(spacings[:, :2].min()), float(spacings[:, :2].max())],
                    "thickness": [float(spacings[:, 2].min()), float(spacings[:, 2].max())]},
        intensity={"modality": spec.modality,
                   "fractions": {k: float(np.mean([p.get(k, 0.0) for p in profiles])) for k in profiles[0]}},
        organs=organ_refs, score=score, thresholds={"warn_below": warn_below, "fail_below": FAIL_BELOW},
    )


def qc_samples(net: Any, slices: Sequence[ScanSlices], organs: Sequence[OrganChannel], config: DistillConfig,
               seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict[str, list[dict[str, float]]], list[tuple[str, str, str, float]]]:
    """The calibration samples: one per organ x slice block x perturbation where the teacher has the organ.

    Returns (features (n, 3), Dice vs the teacher (n,), the clean held-out confidence statistics per
    organ, and each sample's (organ, block, perturbation kind, amount)).
    """
    from edgemed.models import predict_slices

    spec = config.preprocess
    unit = 1.0 / (spec.window_hu[1] - spec.window_hu[0]) if spec.modality == "CT" else 1.0 / 700.0
    rng = np.random.default_rng(seed)
    rows, dice, tags, clean = [], [], [], {o.name: [] for o in organs}
    for sc in slices:
        for ks, part in _slice_sets(sc):
            for kind, amount in PERTURBATIONS:
                image = _perturb(sc.image, sc.hard, kind, _scaled(kind, amount, unit), rng)
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
                    tags.append((o.name, part, kind, amount))
                    if kind == "clean" and part == "held-out" and "mean_max_probability" in conf:
                        clean[o.name].append(conf)
    return np.array(rows).reshape(-1, 3), np.array(dice), clean, tags


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


def _warn_threshold(features: np.ndarray, dice: np.ndarray, folds: int = 5) -> tuple[float, float]:
    """(warn_below, margin): BAD_DICE plus the RECALL quantile of the cross-validated overestimate.

    Each sample is scored by an estimator fitted without its fold (folds by sample order, which runs
    organ x block x perturbation, so a fold holds out whole perturbation families of a block), and the
    overestimate score - Dice is taken on the samples with Dice >= MARGIN_FROM.
    """
    n = len(dice)
    if n < 2 * folds:
        return WARN_BELOW, 0.0
    fold = np.arange(n) * folds // n
    held = np.empty(n)
    for f in range(folds):
        model = fit_score_model(features[fold != f], dice[fold != f])
        held[fold == f] = [apply_score_model(model, r) for r in features[fold == f]]
    near = dice >= MARGIN_FROM
    if near.sum() < 5:
        return WARN_BELOW, 0.0
    margin = float(np.quantile(held[near] - dice[near], RECALL))
    return round(min(WARN_RANGE[1], max(WARN_RANGE[0], BAD_DICE + margin)), 3), round(margin, 4)


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


def _scaled(kind: str, amount: float, unit: float) -> float:
    """A perturbation's amount on the student's intensity scale (HU amounts times `unit`; others as they are)."""
    return amount * unit if kind in _IN_HU else amount


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
    if kind == "contrast":  # intensities stretched or flattened about the image's mean
        mean = np.float32(image.mean())
        return np.clip(mean + np.float32(amount) * (image - mean), 0.0, 1.0)
    if kind == "slice_average":  # thicker slices: each the mean of `amount` neighbours
        h = int(amount) // 2
        padded = np.pad(image, [(h, h), (0, 0), (0, 0)], mode="edge")
        return np.mean([padded[i:i + len(image)] for i in range(2 * h + 1)], axis=0).astype(np.float32)
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
