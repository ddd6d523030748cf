"""Runtime quality control: calibrated at distill time, carried by export, verdicts on real inputs.

Built on the session's phantom student (tests/runtime/conftest.py): two phantoms, one held out.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgemed import runtime
from edgemed.artifacts import OnnxBundle, QCRecord, StudentCheckpoint
from edgemed.errors import InputError
from edgemed.io import Volume, read_labels, read_volume, write_nifti
from edgemed.phantom import PhantomConfig, make_phantom
from edgemed.runtime import QCReport, check_input, fit_score_model, spearman

SMALL = PhantomConfig(shape=(48, 40, 24), spacing_mm=(8.0, 8.0, 10.0))  # the grid of the session's phantom student

OLD_BUNDLE = Path(__file__).resolve().parents[1] / "assets" / "release-0.1.0" / "liver.edgemed"


def _phantom(seed: int = 13) -> tuple[Volume, Volume]:
    return make_phantom(seed, SMALL)


def test_calibration_is_recorded_and_carried_by_export(phantom_student: StudentCheckpoint,
                                                       phantom_bundle: OnnxBundle) -> None:
    record = phantom_student.meta.qc
    assert isinstance(record, QCRecord)
    assert "held-out" in record.method and record.samples >= 4
    assert record.scans == phantom_student.meta.scans
    liver = record.organs["liver"]
    lo, hi = liver["volume_ml"]
    assert 0 < lo <= hi
    assert set(record.score["features"]) == set(runtime.SCORE_FEATURES)
    assert record.thresholds["fail_below"] < record.thresholds["warn_below"]
    # Round trip through JSON, and export carries it unchanged into the bundle.
    assert QCRecord.from_json(json.loads(json.dumps(record.to_json()))) == record
    reopened = OnnxBundle.load(phantom_bundle.path)
    assert reopened.meta.qc == record


def test_a_clean_phantom_raises_no_input_finding_and_the_score_tracks_dice(phantom_bundle: OnnxBundle) -> None:
    from edgemed.metrics import dice

    ct, labels = _phantom(1)  # the held-out training phantom
    with runtime.load(phantom_bundle.path, backend="ort") as seg:
        mask, qc = seg.segment_with_qc(ct)
        assert seg.last_qc is qc
        assert seg.last_timings is not None and seg.last_timings.qc_ms > 0
    assert isinstance(qc, QCReport) and qc.calibrated
    assert not [r for r in qc.reasons if r.check in ("modality", "values", "side", "spacing", "fov")], qc.to_json()
    assert qc.organs[0].features["voxels"] == int((mask.array == 5).sum())
    # The session's phantom student is deliberately tiny (6 epochs): its Dice is far from 1, and QC must say so.
    measured = dice(mask.array == 5, labels.array == 5)
    assert qc.score is not None and abs(qc.score - measured) < 0.2
    assert qc.flagged == (measured < 0.85)


def test_segment_keeps_returning_a_volume_and_sets_last_qc(phantom_bundle: OnnxBundle) -> None:
    ct, _ = _phantom(1)
    with runtime.load(phantom_bundle.path, backend="ort") as seg:
        mask = seg.segment(ct)
        assert isinstance(mask, Volume) and seg.last_qc is not None
        plain = seg.segment(ct, qc=False)
    np.testing.assert_array_equal(mask.array, plain.array)  # QC never changes the mask


def test_an_mr_like_scan_passed_as_ct_fails(phantom_bundle: OnnxBundle) -> None:
    ct, _ = _phantom(1)
    # MR-like: positive intensities with no air or fat at their Hounsfield values.
    mr = ct.with_array(np.clip(ct.array + 1024.0, 0, None) * 0.4)
    with runtime.load(phantom_bundle.path, backend="ort") as seg:
        _, qc = seg.segment_with_qc(mr)
    assert qc.verdict == "fail"
    assert any(r.check == "modality" and r.severity == "fail" for r in qc.reasons)


def test_a_wrong_rescale_slope_fails(phantom_bundle: OnnxBundle) -> None:
    ct, _ = _phantom(1)
    with runtime.load(phantom_bundle.path, backend="ort") as seg:
        _, qc = seg.segment_with_qc(ct.with_array(2.0 * (ct.array + 1024.0) - 1024.0))
    assert qc.verdict == "fail" and any(r.check == "modality" for r in qc.reasons)


def test_a_flipped_scan_is_flagged(phantom_bundle: OnnxBundle) -> None:
    ct, _ = _phantom(1)
    with runtime.load(phantom_bundle.path, backend="ort") as seg:
        _, qc = seg.segment_with_qc(ct.with_array(np.ascontiguousarray(ct.array[::-1])))
    assert qc.flagged, qc.to_json()


def test_an_organ_absent_scan_is_flagged(phantom_bundle: OnnxBundle) -> None:
    ct, labels = _phantom(1)
    # The slices below and above the liver, stacked: no liver anywhere.
    without = np.flatnonzero(~(labels.array == 5).any(axis=(0, 1)))
    assert without.size >= 3
    empty = Volume(np.ascontiguousarray(ct.array[:, :, without]), ct.affine, "CT", "no_liver")
    with runtime.load(phantom_bundle.path, backend="ort") as seg:
        mask, qc = seg.segment_with_qc(empty)
    assert qc.flagged, qc.to_json()
    if not (mask.array == 5).any():
        assert any(r.check == "absent" for r in qc.reasons)


def test_constant_volumes_and_label_maps_are_named(phantom_bundle: OnnxBundle) -> None:
    ct, labels = _phantom(1)
    constant = ct.with_array(np.full(ct.shape, 40.0, np.float32))
    reasons, _ = check_input(constant, None)
    assert any(r.check == "values" and r.severity == "fail" and "blank" in r.message for r in reasons)
    reasons, _ = check_input(labels.with_array(labels.array.astype(np.int16), modality="CT"), None)
    assert any(r.check == "values" and "label map" in r.message for r in reasons)
    nan = ct.with_array(np.where(np.arange(ct.array.size).reshape(ct.shape) % 7 == 0, np.nan, ct.array))
    reasons, _ = check_input(nan, None)
    assert any(r.check == "values" and "NaN" in r.message for r in reasons)
    # The runtime itself still refuses them with one line (nothing to segment).
    with runtime.load(phantom_bundle.path, backend="ort") as seg, pytest.raises(InputError):
        seg.segment_with_qc(constant)


def test_thick_slices_beyond_the_trained_range_warn(phantom_bundle: OnnxBundle) -> None:
    ct, _ = _phantom(1)
    affine = ct.affine.copy()
    affine[:3, 2] *= 3.0  # 30 mm slices; trained on 10 mm, context step 6 mm
    with runtime.load(phantom_bundle.path, backend="ort") as seg:
        _, qc = seg.segment_with_qc(Volume(ct.array, affine, "CT", "thick"))
    assert any(r.check == "spacing" and r.severity == "warn" for r in qc.reasons)


def test_an_old_bundle_loads_and_says_not_calibrated() -> None:
    bundle = OnnxBundle.load(OLD_BUNDLE)
    assert bundle.meta.qc is None
    ct, _ = make_phantom(3, SMALL)
    with runtime.load(OLD_BUNDLE, backend="ort") as seg:
        try:
            _, qc = seg.segment_with_qc(ct)
        except InputError as err:  # the 0.1.0 bundle's grid may not suit this phantom; QC never got to run
            pytest.skip(f"the 0.1.0 bundle cannot segment this phantom: {err}")
    assert not qc.calibrated and qc.score is None and all(o.score is None for o in qc.organs)
    assert any(r.check == "calibration" and "not calibrated" in r.message for r in qc.reasons)
    assert "not calibrated" in qc.summary() or qc.verdict != "ok"


def test_score_model_is_monotone_and_ranks() -> None:
    rng = np.random.default_rng(0)
    expected = rng.uniform(0.3, 0.99, 40)
    dice = np.clip(expected + rng.normal(0, 0.03, 40), 0, 1)
    logit = np.log(expected / (1 - expected))
    features = np.stack([logit, logit + rng.normal(0, 0.5, 40), 1 - expected], axis=1)
    model = fit_score_model(features, dice)
    assert model["weights"][0] >= 0 and model["weights"][1] >= 0 and model["weights"][2] <= 0
    assert model["fit"]["spearman"] > 0.9
    assert spearman(np.array([1.0, 2, 3, 4]), np.array([10.0, 20, 30, 40])) == pytest.approx(1.0)
    assert spearman(np.array([1.0, 2]), np.array([1.0, 2])) is None


def _cli(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgemed", *args], capture_output=True, text=True, timeout=600)


def test_cli_json_reports_the_verdict(phantom_bundle: OnnxBundle, tmp_path: Path) -> None:
    ct, _ = _phantom(1)
    scan = write_nifti(ct, tmp_path / "ct.nii.gz")
    res = _cli(["segment", str(phantom_bundle.path), str(scan), "--out", str(tmp_path / "m.nii.gz"), "--json"])
    assert res.returncode == 0, res.stderr
    qc = json.loads(res.stdout)["qc"]
    assert qc["verdict"] in ("ok", "warn", "fail") and qc["calibrated"] is True
    assert qc["organs"][0]["name"] == "liver" and "score" in qc["organs"][0]
    text = _cli(["segment", str(phantom_bundle.path), str(scan), "--out", str(tmp_path / "m2.nii.gz")])
    assert text.returncode == 0 and "QC " in text.stdout


def test_cli_no_mask_on_fail_writes_nothing(phantom_bundle: OnnxBundle, tmp_path: Path) -> None:
    ct, _ = _phantom(1)
    scan = write_nifti(ct.with_array(np.clip(ct.array + 1024.0, 0, None) * 0.4), tmp_path / "mr.nii.gz")
    out = tmp_path / "mask.nii.gz"
    res = _cli(["segment", str(phantom_bundle.path), str(scan), "--modality", "CT", "--out", str(out),
                "--no-mask-on-fail", "--json"])
    assert res.returncode == 1
    assert not out.exists() and list(tmp_path.iterdir()) == [scan]
    assert json.loads(res.stdout)["written"] == [] and json.loads(res.stdout)["qc"]["verdict"] == "fail"
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "no mask written" in lines[0] and "Traceback" not in res.stderr
    # Without the flag the mask is written and the verdict printed.
    res = _cli(["segment", str(phantom_bundle.path), str(scan), "--modality", "CT", "--out", str(out)])
    assert res.returncode == 0 and out.exists() and "QC fail" in res.stdout


def test_dicom_seg_carries_the_qc_note(phantom_bundle: OnnxBundle, real_data: Path, tmp_path: Path) -> None:
    pydicom = pytest.importorskip("pydicom")
    pytest.importorskip("highdicom")
    from edgemed.io import write_dicom_seg

    series = real_data / "dcmqi_ct3slice" / "ct"
    volume = read_volume(series)
    labels = read_labels(real_data / "dcmqi_ct3slice" / "seg" / "liver_seg.nrrd", like=volume)
    mask = labels.with_array(np.where(labels.array == 1, 5, 0).astype(np.uint8), modality="SEG")
    note = "QC warn (est. Dice 0.78): liver is in 3 pieces, the largest 60% of it; the teacher's had 1 (100%)."
    out = write_dicom_seg(mask, series, tmp_path / "seg.dcm", {5: "liver"}, note=note)
    ds = pydicom.dcmread(out)
    assert ds.SeriesDescription.startswith("QC warn (est. Dice 0.78)") and len(ds.SeriesDescription) <= 64
    assert ds.ContentLabel == "QC_WARN"


def test_every_calibration_perturbation_changes_the_image() -> None:
    """Each perturbation the estimator is fitted on alters the image by its stated amount (blur in pixels, not HU)."""
    from edgemed.compress._qc_calibrate import PERTURBATIONS, _perturb, _scaled

    image = np.zeros((9, 32, 32), np.float32)
    image[:, 8:24, 8:24] = 0.6
    image[::2] += 0.1  # something for slice averaging to average
    hard = (image > 0.3).astype(np.uint8)
    unit = 1.0 / 400.0  # a 400 HU window
    rng = np.random.default_rng(0)
    for kind, amount in PERTURBATIONS:
        out = _perturb(image, hard, kind, _scaled(kind, amount, unit), rng)
        changed = float(np.abs(out - image).mean())
        assert (changed == 0.0) == (kind == "clean"), (kind, amount, changed)
    # A blur of s pixels spreads a step edge over about s pixels (it was once scaled like HU and did nothing).
    edge = _perturb(image, hard, "blur", _scaled("blur", 2.0, unit), rng)[4, 16]
    assert 0.05 < edge[7] < edge[8] < 0.55 and edge[5] > 0.005


def test_warn_threshold_adds_the_estimators_overestimate_to_the_bad_line() -> None:
    """warn_below = 0.85 + the 90 % quantile of the cross-validated overestimate, within its range."""
    from edgemed.compress._qc_calibrate import BAD_DICE, WARN_RANGE, _warn_threshold

    rng = np.random.default_rng(1)
    dice = rng.uniform(0.5, 0.97, 200)
    logit = np.log(dice / (1 - dice))

    def rows(noise: float) -> np.ndarray:
        seen = np.clip(dice + rng.normal(0, noise, dice.size), 0.02, 0.995)
        lg = np.log(seen / (1 - seen))
        return np.stack([lg, lg, 1 - seen], axis=1)

    tight, _ = _warn_threshold(np.stack([logit, logit, 1 - dice], axis=1), dice)
    loose, margin = _warn_threshold(rows(0.06), dice)
    assert tight == pytest.approx(WARN_RANGE[0], abs=0.01)  # an exact estimator needs no margin
    assert 0.03 < margin < 0.15 and loose == pytest.approx(min(WARN_RANGE[1], BAD_DICE + margin), abs=1e-3)


def test_a_misplaced_organ_puts_every_organ_of_the_scan_in_doubt() -> None:
    """A joint student's confident, well-placed spleen is still flagged when its liver lies on the wrong side."""
    from edgemed.artifacts import OrganChannel
    from edgemed.runtime import check_output, organ_geometry

    ct, _ = _phantom(1)
    labels = np.zeros(ct.shape, np.uint8)
    labels[14:22, 12:28, 8:16] = 5   # liver on the patient's left (low i): it belongs on the right
    labels[3:12, 14:26, 9:15] = 1    # spleen on the left, where it belongs
    organs = [OrganChannel(1, 5, "liver"), OrganChannel(2, 1, "spleen")]
    body = (0, ct.shape[0], 0, ct.shape[1])
    spleen = organ_geometry(labels, ct.spacing_mm, body, label=1)
    ref = {"volume_ml": [1.0, 1e6], "components": 1, "largest_share": 0.9, "z_extent_mm": 80.0, "ml_per_cm": 0.0,
           "outside_air_share": 1.0, "touches_edge": False}
    record = QCRecord(method="test", organs={"liver": {**ref, "side": 0.5, "ap": 0.0},
                                             "spleen": {**ref, "side": spleen["side"], "ap": spleen["ap"]}})
    body = (0, ct.shape[0], 0, ct.shape[1])
    qc = check_output(labels, ct, organs, record, None, body, [], {})
    verdicts = {o.name: o.verdict for o in qc.organs}
    assert verdicts["liver"] == "fail" and verdicts["spleen"] == "warn", qc.to_json()
    assert any(r.check == "anatomy" and "liver" in r.message for r in qc.reasons)
    # One organ alone: its own finding is the verdict, no second reason.
    alone = check_output(labels, ct, organs[:1], record, None, body, [], {})
    assert not any(r.check == "anatomy" for r in alone.reasons)
    # A liver that moved because it broke apart is a bad liver mask, not a misplaced series.
    broken = labels.copy()
    broken[broken == 5] = 0
    for i0 in (14, 17, 20):
        broken[i0:i0 + 2, 12:28, 8:16] = 5
    qc = check_output(broken, ct, organs, record, None, body, [], {})
    assert {"components", "side"} <= {r.check for r in qc.reasons if r.organ == "liver"}, qc.to_json()
    assert not any(r.check == "anatomy" for r in qc.reasons)


def test_organ_geometry_reads_large_grids_strided_without_changing_the_answer() -> None:
    from edgemed.runtime import organ_geometry

    mask = np.zeros((512, 512, 4), bool)
    yy, xx = np.mgrid[0:512, 0:512]
    mask[(xx - 300) ** 2 + (yy - 200) ** 2 < 90 ** 2] = True
    spacing = (0.7, 0.7, 5.0)
    geo = organ_geometry(mask, spacing, (0, 512, 0, 512))
    exact_ml = mask.sum() * 0.7 * 0.7 * 5.0 / 1000
    assert geo["volume_ml"] == pytest.approx(exact_ml, rel=0.02)
    assert geo["side"] == pytest.approx((200 - 255.5) / 256, abs=0.02)   # +i = patient's right; x is axis 0
    assert geo["ap"] == pytest.approx((300 - 255.5) / 256, abs=0.02)
    assert geo["components"] == 1 and geo["largest_share"] == 1.0
