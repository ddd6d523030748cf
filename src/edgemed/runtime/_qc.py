"""Runtime quality control: does this scan suit the student, and does its mask look trustworthy? (numpy only)

Three parts, all cheap next to inference:

- **Input checks** (`check_input`), before the model runs: NaN/inf voxels, a constant volume or
  a label map passed as a scan, whether the intensities behave like Hounsfield units (air near
  -1000, fat near -100, soft tissue near +40), and spacing, slice thickness and z-coverage
  against what the student was trained on.
- **Confidence statistics** (`ConfidenceStats`, in `_qc_score`), gathered inside the one inference loop slab by
  slab from the student-grid probabilities (no probability volume is held): per organ the
  predicted area, the model's own expected Dice, mean max-probability and entropy inside the
  mask, and the confidence on the mask's boundary.
- **Output checks** (`check_output`), on the label map: volume, connected components, side and
  front-back position against the body, compared with the ranges the student's `QCRecord` holds
  (measured at distill time from the teacher's outputs and the student's behaviour).

A QC score estimates each organ's Dice from the confidence features with the logistic model
fitted at calibration (`fit_score_model`); the verdict is the worst of the reasons' severities
and the score against the record's thresholds. Nothing here is tuned per organ: every margin is
a shared constant applied to that organ's calibrated reference.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgemed._ndimage import component_labels
from edgemed.artifacts import OrganChannel, QCRecord
from edgemed.io import Volume
from edgemed.runtime._qc_score import ConfidenceStats, apply_score_model, score_features

__all__ = ["OrganQC", "QCReason", "QCReport", "check_input", "check_output", "intensity_profile", "organ_geometry"]

#: Verdicts from best to worst.
VERDICTS = ("ok", "warn", "fail")
#: CT intensity bands (HU, half-open) whose shares describe a scan.
HU_BANDS = {"air": (-1100.0, -800.0), "lung": (-800.0, -400.0), "fat": (-150.0, -50.0),
            "soft_tissue": (-30.0, 100.0), "dense": (300.0, 4000.0)}
#: Voxels sampled for the intensity profile (a strided view; enough for shares of 0.1 %).
_SAMPLE_VOXELS = 2**16
#: Voxels of the label map the output checks read (larger grids are read every s-th row and column).
_GEOMETRY_VOXELS = 2**18
#: Shared margins (the same for every organ; each applies to that organ's calibrated reference).
_SPACING_WARN = 1.5          # thicker / coarser than the trained maximum by this factor: warn
_VOLUME_LOW, _VOLUME_HIGH = 0.35, 2.5   # plausible volume: [lo * 0.35, hi * 2.5] of the teacher's
_SHARE_DROP = 0.2            # largest component's share below the teacher's minus this: warn
_EXTRA_COMPONENTS = 2        # more sizeable components than the teacher's plus this: warn
_SIDE_MIN = 0.15             # |side| of a reference below this: the organ straddles the midline, no side check
_SOFT_PEAK_HU = (-20.0, 120.0)  # where CT's soft-tissue peak lies, whatever the phase
_MOVED = 0.3                 # organ centre further than this (shares of the body's half-size) from the teacher's: warn
_THIN = 0.3                  # mean cross-section below this share of the teacher's: warn
_SERIES_GEOMETRY = ("side", "position")  # findings about one organ that put the whole series in doubt
_AIR_RIM = 0.01              # share of the band around the organ in outside air above the teacher's plus this: warn


@dataclass(frozen=True)
class QCReason:
    """One finding, in plain words.

    Attributes:
        check: The check's name, e.g. "modality", "spacing", "volume", "side", "score".
        severity: "info" (noted, verdict unchanged), "warn" or "fail".
        message: What was found, against what the student was trained on, and what it may mean.
        organ: The organ it concerns, or None for the whole scan.
    """

    check: str
    severity: str
    message: str
    organ: str | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"check": self.check, "severity": self.severity, "organ": self.organ, "message": self.message}


@dataclass(frozen=True)
class OrganQC:
    """QC of one organ's mask.

    Attributes:
        name: The organ.
        verdict: "ok", "warn" or "fail".
        score: Estimated Dice in [0, 1] vs the teacher (None: not calibrated; 0.0 when nothing was found).
        features: What was measured (volume_ml, components, largest_share, side, ap, touches_edge,
            expected_dice, mean_max_probability, entropy_inside, boundary_confidence).
    """

    name: str
    verdict: str
    score: float | None
    features: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"name": self.name, "verdict": self.verdict,
                "score": None if self.score is None else round(self.score, 4),
                "features": {k: _round(v) for k, v in self.features.items()}}


@dataclass(frozen=True)
class QCReport:
    """The runtime's quality control of one `segment` call.

    Attributes:
        verdict: "ok", "warn" or "fail": the worst over the reasons and organs. "warn" and
            "fail" mean: have a person look before the mask is used.
        calibrated: False when the bundle carries no QC reference (made before QC existed): only
            the checks that need no reference ran, and `score` is None.
        score: The lowest organ score (estimated Dice), or None.
        organs: Per-organ results.
        reasons: Every finding, in plain words (verdict-changing ones first).
        input: Facts about the scan (spacing, intensity shares, soft-tissue peak).
        qc_ms: Time spent on QC in this call (input + confidence statistics + output checks).
    """

    verdict: str
    calibrated: bool
    score: float | None
    organs: tuple[OrganQC, ...]
    reasons: tuple[QCReason, ...]
    input: dict[str, Any] = field(default_factory=dict)
    qc_ms: float = 0.0

    @property
    def flagged(self) -> bool:
        """True for "warn" and "fail": the mask needs a person's look."""
        return self.verdict != "ok"

    def summary(self) -> str:
        """One line: verdict, score and the main reason, e.g. for a DICOM series description or a log."""
        score = "" if self.score is None else f" (est. Dice {self.score:.2f})"
        if not self.calibrated and self.verdict == "ok":
            return f"QC not calibrated{score}"
        main = next((r.message for r in self.reasons if r.severity == self.verdict), "")
        head = f"QC {self.verdict}{score}"
        return f"{head}: {main}" if main else head

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"verdict": self.verdict, "calibrated": self.calibrated,
                "score": None if self.score is None else round(self.score, 4),
                "reasons": [r.to_json() for r in self.reasons], "organs": [o.to_json() for o in self.organs],
                "input": {k: _round(v) for k, v in self.input.items()}, "qc_ms": round(self.qc_ms, 3)}


# --------------------------------------------------------------------------------------------- input


def intensity_profile(volume: Volume) -> dict[str, Any]:
    """Shares of the HU bands, the soft-tissue peak and the value range on a strided sample of the scan.

    Returns:
        {"fractions": {band: share}, "soft_peak_hu": mode in [-60, 400] (10 HU bins), "nonfinite": share,
        "distinct": distinct values in the sample (capped), "integer": whether the sample is whole numbers,
        "min", "max"}.
    """
    array = volume.array
    stride = max(1, int(round((array.size / _SAMPLE_VOXELS) ** (1 / 3))))
    sample = np.asarray(array[::stride, ::stride, ::stride]).ravel()
    finite = np.isfinite(sample) if sample.dtype.kind == "f" else None
    nonfinite = 0.0 if finite is None else float(1.0 - finite.mean())
    if finite is not None and nonfinite:
        sample = sample[finite]
    out: dict[str, Any] = {"nonfinite": nonfinite}
    if sample.size == 0:
        return {**out, "fractions": {}, "soft_peak_hu": None, "distinct": 0, "integer": False, "min": None,
                "max": None}
    values = sample.astype(np.float32, copy=False)
    out["fractions"] = {band: float(np.count_nonzero((values >= lo) & (values < hi))) / values.size
                        for band, (lo, hi) in HU_BANDS.items()}
    # Above fat (which can outnumber soft tissue in a trunk CT), below bone.
    hist, edges = np.histogram(values, bins=46, range=(-60.0, 400.0))
    out["soft_peak_hu"] = float(edges[int(hist.argmax())] + 5.0) if hist.any() else None
    out["min"], out["max"] = float(values.min()), float(values.max())
    out["integer"] = bool(np.array_equal(values, np.round(values)))
    out["distinct"] = int(np.unique(values[:: max(1, values.size // 2**12)]).size)
    return out


def check_input(volume: Volume, record: QCRecord | None, *, modality: str = "CT", organs: Sequence[str] = (),
                context_spacing_mm: float | None = None) -> tuple[list[QCReason], dict[str, Any]]:
    """The input checks: what is wrong with the scan for this student, before inference.

    Args:
        volume: The scan.
        record: The student's QC reference, or None (then only the reference-free checks run).
        modality: The student's modality ("CT": Hounsfield-unit checks apply).
        organs: The organs segmented (to compare the scan's z-range with their extent).
        context_spacing_mm: The student's 2.5D context step (interpolated along z): slices up to
            this far apart are within its design, whatever it was trained on.

    Returns:
        (reasons, facts): the findings and what was measured (spacing, intensity profile).
    """
    reasons: list[QCReason] = []
    spacing = tuple(float(s) for s in volume.spacing_mm)
    profile = intensity_profile(volume)
    facts: dict[str, Any] = {"spacing_mm": spacing, "shape": tuple(volume.shape),
                             "z_extent_mm": spacing[2] * volume.shape[2], **profile}
    if profile["nonfinite"]:
        reasons.append(QCReason("values", "fail", f"{profile['nonfinite']:.1%} of the voxels are NaN or infinite; "
                                                  "the file is damaged."))
    if profile["min"] is not None and profile["min"] == profile["max"]:
        reasons.append(QCReason("values", "fail", f"every voxel is {profile['min']:g}: a blank image, not a scan."))
    elif profile["integer"] and profile["min"] is not None and profile["min"] >= 0 and profile["distinct"] <= 64 \
            and profile["max"] <= 1000:
        reasons.append(QCReason("values", "fail", f"the voxels are {profile['distinct']} distinct small integers: "
                                                  "a label map, not an image."))
    if modality == "CT" and profile["fractions"]:
        reasons += _hu_reasons(profile)
    if record is None:
        return reasons, facts
    reasons += _spacing_reasons(spacing, record, context_spacing_mm)
    extents = [float(record.organs[o]["z_extent_mm"]) for o in organs
               if o in record.organs and record.organs[o].get("z_extent_mm")]
    if extents and facts["z_extent_mm"] < 0.5 * min(extents):
        reasons.append(QCReason("coverage", "info", f"the scan covers {facts['z_extent_mm']:.0f} mm along z; "
                                f"the organs span {min(extents):.0f} mm or more in training, so at most part of "
                                "an organ can be in it."))
    return reasons, facts


def _hu_reasons(profile: Mapping[str, Any]) -> list[QCReason]:
    f = profile["fractions"]
    air, fat = f["air"] + f["lung"], f["fat"]
    peak = profile["soft_peak_hu"]
    if air < 0.002 and fat < 0.002:
        return [QCReason("modality", "fail", "the intensities are not Hounsfield units: no air (about -1000 HU) and "
                                             "no fat (about -100 HU). An MR, or a CT without its rescale slope?")]
    out = []
    if peak is None or not _SOFT_PEAK_HU[0] <= peak <= _SOFT_PEAK_HU[1]:
        shown = "nowhere in -60…400 HU" if peak is None else f"at {peak:.0f} HU"
        out.append(QCReason("modality", "fail", f"soft tissue peaks {shown}; in CT it lies near 20–80 HU. A wrong "
                                                "rescale slope/intercept, or not a CT?"))
    if fat < 0.002:
        out.append(QCReason("modality", "warn", f"only {fat:.2%} of the voxels are fat-like (-150…-50 HU); a CT of "
                                                "the trunk has several percent."))
    return out


def _spacing_reasons(spacing: tuple[float, float, float], record: QCRecord,
                     context_spacing_mm: float | None) -> list[QCReason]:
    out = []
    thick = record.spacing_mm.get("thickness")
    inplane = record.spacing_mm.get("inplane")
    if thick and spacing[2] > max(_SPACING_WARN * float(thick[1]), context_spacing_mm or 0.0) + 0.05:
        out.append(QCReason("spacing", "warn", f"slices are {spacing[2]:.1f} mm apart; the student was trained on "
                                               f"{_span(thick)} mm slices."))
    if inplane and max(spacing[:2]) > _SPACING_WARN * float(inplane[1]):
        out.append(QCReason("spacing", "warn", f"in-plane pixels are {max(spacing[:2]):.2f} mm; the student was "
                                               f"trained on {_span(inplane)} mm."))
    return out


# --------------------------------------------------------------------------------------------- output


def organ_geometry(mask: np.ndarray, spacing_mm: Sequence[float], body: tuple[int, int, int, int],
                   image: np.ndarray | None = None, *, label: int | None = None) -> dict[str, Any]:
    """Volume, components, position against the body and z-coverage of one organ's (X, Y, Z) mask.

    Args:
        mask: The organ's boolean mask on the scan grid (canonical RAS voxel order: +i is the
            patient's right, +j anterior).
        spacing_mm: The grid's voxel size.
        body: The body's in-plane box (x0, x1, y0, y1) (`edgemed.io.body_box`).
        image: The scan's intensities (CT: HU); when given, "outside_air_share" is measured.
        label: When given, `mask` is a label map and the organ is its voxels equal to `label`:
            found a few slices at a time, so no full-size boolean array is made.

    Returns:
        {"voxels", "volume_ml", "components" (those of >= 1 % of the organ), "largest_share",
        "side", "ap" (centroid offset from the body box's centre, in shares of its half-size),
        "z_extent_mm", "touches_edge" (the mask reaches the scan's first or last slice),
        "ml_per_cm" (mean cross-section: volume per cm of height), "outside_air_share" (share of an
        8 mm band around the mask, in-plane, that is outside air, <= -980 HU, or off the image:
        organs lie inside the body, so a high share means the field of view cuts it)}.
    """
    # A large, fine grid is read every s-th row and column (never coarser than 3 mm): volumes, shares and
    # positions need no full in-plane resolution, and QC must stay a small part of `segment` even for a
    # few-slice scan.
    finest = int(3.0 // max(float(spacing_mm[0]), float(spacing_mm[1]), 0.1))
    s = max(1, min(finest, int(math.ceil(math.sqrt(mask.size / _GEOMETRY_VOXELS)))))
    if s > 1:
        mask = mask[::s, ::s]
        image = image[::s, ::s] if image is not None else None
        spacing_mm = (float(spacing_mm[0]) * s, float(spacing_mm[1]) * s, float(spacing_mm[2]))
        body = (body[0] / s, (body[1] - 1) / s + 1, body[2] / s, (body[3] - 1) / s + 1)
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    xs, ys, zs = _extent(mask, label)
    if zs.size == 0:
        return {"voxels": 0, "volume_ml": 0.0}
    crop = mask[xs[0]:xs[-1] + 1, ys[0]:ys[-1] + 1, zs[0]:zs[-1] + 1]
    crop = crop == label if label is not None else np.asarray(crop, dtype=bool)
    # Components on a strided view when the organ's box is large: counts and shares need no full resolution.
    stride = max(1, int(math.ceil((crop.size / 2**15) ** (1 / 3))))
    labels, n = component_labels(np.ascontiguousarray(crop[::stride, ::stride, ::stride]))
    sizes = np.bincount(labels.ravel())[1:] if n else np.zeros(0, dtype=np.int64)
    voxels = int(np.count_nonzero(crop))
    cx = (float((np.count_nonzero(crop, axis=(1, 2)) * np.arange(xs[0], xs[-1] + 1)).sum()) / voxels)
    cy = (float((np.count_nonzero(crop, axis=(0, 2)) * np.arange(ys[0], ys[-1] + 1)).sum()) / voxels)
    x0, x1, y0, y1 = body
    z_extent_mm = float((zs[-1] - zs[0] + 1) * spacing_mm[2])
    out: dict[str, Any] = {}
    if image is not None:
        out["outside_air_share"] = _outside_air_share(crop, image, xs, ys, zs, spacing_mm)
    return {**out, "voxels": voxels, "volume_ml": voxels * voxel_ml, "ml_per_cm": voxels * voxel_ml / (z_extent_mm / 10),
            "components": int((sizes >= 0.01 * sizes.sum()).sum()) if n else 0,
            "largest_share": float(sizes.max() / sizes.sum()) if n else 0.0,
            "side": (cx - (x0 + x1 - 1) / 2) / max(1.0, (x1 - x0) / 2),
            "ap": (cy - (y0 + y1 - 1) / 2) / max(1.0, (y1 - y0) / 2),
            "z_extent_mm": z_extent_mm,
            "touches_edge": bool(zs[0] == 0 or zs[-1] == mask.shape[2] - 1)}


def _extent(mask: np.ndarray, label: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The x, y and z indices the organ occupies, from chunks of slices (no full-size temporaries)."""
    shape = mask.shape
    in_x, in_y = np.zeros(shape[0], dtype=bool), np.zeros(shape[1], dtype=bool)
    in_z = np.zeros(shape[2], dtype=bool)
    step = max(1, 2**20 // max(1, shape[0] * shape[1]))
    for z0 in range(0, shape[2], step):
        chunk = mask[:, :, z0:z0 + step]
        chunk = chunk == label if label is not None else np.asarray(chunk, dtype=bool)
        in_z[z0:z0 + step] = chunk.any(axis=(0, 1))
        in_x |= chunk.any(axis=(1, 2))
        in_y |= chunk.any(axis=(0, 2))
    return np.flatnonzero(in_x), np.flatnonzero(in_y), np.flatnonzero(in_z)


def _outside_air_share(crop_mask: np.ndarray, image: np.ndarray, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray,
                       spacing_mm: Sequence[float]) -> float:
    """Share of a band around the mask (about 8 mm wide, in-plane) that is outside air or off the image.

    Organs lie inside the body, wrapped in fat and muscle; outside air (<= -980 HU, or the constant a
    scanner writes outside its reconstruction circle) or the image's edge close to one means the
    field of view cuts it. (Lung, next to the liver dome, stays above -980 HU.)
    """
    radius = max(1, int(round(8.0 / max(float(spacing_mm[0]), float(spacing_mm[1]), 0.1))))
    X, Y = image.shape[0], image.shape[1]
    a0, a1 = xs[0] - radius, xs[-1] + 1 + radius
    b0, b1 = ys[0] - radius, ys[-1] + 1 + radius
    # Every k-th slice when the box is large: the band is in-plane, slices need not all be seen.
    kz = max(1, int(math.ceil((a1 - a0) * (b1 - b0) * len(range(zs[0], zs[-1] + 1)) / 2**17)))
    zsel = np.arange(zs[0], zs[-1] + 1, kz)
    # Pad with "off the image" (NaN) where the band leaves the array.
    crop = np.full((a1 - a0, b1 - b0, zsel.size), np.nan, dtype=np.float32)
    ca0, cb0 = max(0, a0), max(0, b0)
    ca1, cb1 = min(X, a1), min(Y, b1)
    crop[ca0 - a0:ca1 - a0, cb0 - b0:cb1 - b0] = image[ca0:ca1, cb0:cb1][:, :, zsel]
    m = np.zeros(crop.shape, dtype=bool)
    m[radius:radius + crop_mask.shape[0], radius:radius + crop_mask.shape[1]] = crop_mask[:, :, zsel - zs[0]]
    band = m.copy()
    for _ in range(radius):
        grown = band.copy()
        grown[1:] |= band[:-1]
        grown[:-1] |= band[1:]
        grown[:, 1:] |= band[:, :-1]
        grown[:, :-1] |= band[:, 1:]
        band = grown
    band &= ~m
    if not band.any():
        return 0.0
    values = crop[band]
    return float(np.count_nonzero(~(values > -980.0))) / values.size  # NaN (off the image) counts as outside


def check_output(labels: np.ndarray, volume: Volume, organs: Sequence[OrganChannel], record: QCRecord | None,
                 stats: ConfidenceStats | None, body: tuple[int, int, int, int], input_reasons: Sequence[QCReason],
                 input_facts: Mapping[str, Any], qc_seconds: float = 0.0) -> QCReport:
    """The output checks and the verdict: one `QCReport` for a label map and its confidence statistics.

    Args:
        labels: The (X, Y, Z) label map (teacher ids), before any largest-component cleanup.
        volume: The scan it was made from.
        organs: The student's organs.
        record: The student's QC reference, or None (not calibrated).
        stats: The confidence statistics gathered during inference, or None.
        body: The body's in-plane box (x0, x1, y0, y1).
        input_reasons, input_facts: What `check_input` found.
        qc_seconds: QC time spent so far (input checks, statistics); this call's time is added.
    """
    import time

    t0 = time.perf_counter()
    reasons = list(input_reasons)
    organ_results = []
    for organ in organs:
        geo = organ_geometry(labels, volume.spacing_mm, body, volume.array if volume.modality == "CT" else None,
                             label=organ.label_id)
        conf = stats.features(organ.channel) if stats is not None else {}
        ref = record.organs.get(organ.name) if record is not None else None
        found = _organ_reasons(organ.name, geo, ref)
        score = None
        if record is not None and record.score:
            feats = score_features(conf)
            score = 0.0 if feats is None else apply_score_model(record.score, feats)
            warn_below = record.thresholds.get("warn_below", 0.85)
            fail_below = record.thresholds.get("fail_below", 0.6)
            if feats is not None and score < warn_below:
                level = "fail" if score < fail_below else "warn"
                found.append(QCReason("score", level, f"{organ.name}: the student is unsure of this mask (estimated "
                                      f"Dice {score:.2f}, {'fail' if level == 'fail' else 'warn'} below "
                                      f"{fail_below if level == 'fail' else warn_below:.2f}).", organ.name))
        organ_results.append((organ.name, found, score, {**geo, **conf}))
        reasons += found
    # One student's organs share the scan: an organ's mask that is whole but far from where training puts
    # it (a flipped or unusually positioned series) puts the others' masks in doubt too, however confident
    # they look. A mask that moved because it broke apart is a bad mask, which its own findings report.
    broken = {r.organ for r in reasons if r.check == "components"}
    misplaced = [r.organ for r in reasons if r.check in _SERIES_GEOMETRY and r.severity != "info"
                 and r.organ not in broken]
    shared = list(input_reasons)
    if misplaced and len(organs) > 1:
        names = ", ".join(dict.fromkeys(misplaced))
        shared.append(QCReason("anatomy", "warn", f"{names} lies far from where training puts it: the series may be "
                                                  "flipped or positioned unlike the training scans, so every organ's "
                                                  "mask is in doubt.", None))
        reasons.append(shared[-1])
    organ_results = [OrganQC(name, _worst([r.severity for r in found + shared]), score, feats)
                     for name, found, score, feats in organ_results]
    if record is None:
        reasons.append(QCReason("calibration", "info", "QC not calibrated: this bundle carries no reference ranges "
                                "(distilled before QC existed); only reference-free checks ran. Re-distill, or run "
                                "edgemed.compress.calibrate_qc on the student, and re-export."))
    verdict = _worst([r.severity for r in reasons])
    reasons.sort(key=lambda r: -_SEVERITY.get(r.severity, 0))
    scores = [o.score for o in organ_results if o.score is not None]
    seconds = qc_seconds + time.perf_counter() - t0
    return QCReport(verdict=verdict, calibrated=record is not None, score=min(scores) if scores else None,
                    organs=tuple(organ_results), reasons=tuple(reasons), input=dict(input_facts),
                    qc_ms=seconds * 1e3)


def _organ_reasons(name: str, geo: Mapping[str, Any], ref: Mapping[str, Any] | None) -> list[QCReason]:
    if geo["voxels"] == 0:
        return [QCReason("absent", "warn", f"no {name} was found: the organ is outside the field of view, or the "
                                           "student missed it.", name)]
    out = []
    ml = geo["volume_ml"]
    if ref is None:
        return out
    lo, hi = (float(v) for v in ref["volume_ml"])
    if ml > _VOLUME_HIGH * hi:
        out.append(QCReason("volume", "fail", f"{name} volume {ml:.0f} ml is far above the "
                                              f"{lo:.0f}–{hi:.0f} ml the teacher found in training.", name))
    elif ml < _VOLUME_LOW * lo and not geo["touches_edge"]:
        out.append(QCReason("volume", "warn", f"{name} volume {ml:.0f} ml is far below the {lo:.0f}–{hi:.0f} ml the "
                                              "teacher found in training, and the organ is not cut by the scan's "
                                              "edge.", name))
    elif geo["touches_edge"]:
        out.append(QCReason("coverage", "info", f"{name} reaches the first or last slice: the scan cuts it, so its "
                                                f"volume ({ml:.0f} ml) is partial.", name))
    if geo["largest_share"] < float(ref["largest_share"]) - _SHARE_DROP or \
            geo["components"] > int(ref["components"]) + _EXTRA_COMPONENTS:
        out.append(QCReason("components", "warn", f"{name} is in {geo['components']} pieces, the largest "
                            f"{geo['largest_share']:.0%} of it; the teacher's had {int(ref['components'])} "
                            f"({float(ref['largest_share']):.0%}).", name))
    side = float(ref["side"])
    if abs(side) >= _SIDE_MIN and np.sign(geo["side"]) != np.sign(side) and abs(geo["side"]) >= 0.5 * _SIDE_MIN:
        where = lambda s: "right" if s > 0 else "left"  # noqa: E731  (+i is the patient's right)
        out.append(QCReason("side", "fail", f"{name} lies on the patient's {where(geo['side'])}; in training it lies "
                                            f"on the {where(side)}. Is the series flipped left-right?", name))
    elif math.hypot(geo["side"] - side, geo["ap"] - float(ref["ap"])) > _MOVED:
        out.append(QCReason("position", "warn", f"{name}'s centre lies {math.hypot(geo['side'] - side, geo['ap'] - float(ref['ap'])):.0%} "
                                                "of the body's half-size away from where the teacher puts it in training.", name))
    if "ml_per_cm" in ref and geo["ml_per_cm"] < _THIN * float(ref["ml_per_cm"]):
        out.append(QCReason("volume", "warn", f"{name}'s mask is thin: {geo['ml_per_cm']:.0f} ml per cm of height, "
                                              f"{float(ref['ml_per_cm']):.0f} in training.", name))
    air_ref = float(ref.get("outside_air_share", 0.0))
    if geo.get("outside_air_share", 0.0) > air_ref + _AIR_RIM:
        out.append(QCReason("fov", "warn", f"{geo['outside_air_share']:.0%} of the band around {name} is outside air or the "
                                           "image's edge (training: " f"{air_ref:.0%}): the field of view may cut "
                                           "the organ.", name))
    return out


_SEVERITY = {"info": 0, "ok": 0, "warn": 1, "fail": 2}


def _worst(severities: Sequence[str]) -> str:
    level = max((_SEVERITY.get(s, 0) for s in severities), default=0)
    return VERDICTS[level]


def _span(pair: Sequence[float]) -> str:
    lo, hi = float(pair[0]), float(pair[1])
    return f"{lo:.1f}" if abs(hi - lo) < 0.05 else f"{lo:.1f}–{hi:.1f}"


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 4)
    if isinstance(value, tuple):
        return [_round(v) for v in value]
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    return value
