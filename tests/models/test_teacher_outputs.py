"""Teacher outputs: stored predictions (NIfTI labels, 4D NIfTI and npz scores) and TeacherOutput itself."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from _tiny_teachers import synthetic_volume
from edgemed.errors import ConfigError, InputError
from edgemed.io import read_volume
from edgemed.models.teachers import StoredPredictions, TeacherOutput, load_stored_prediction

IDS = (0, 5, 6)


# --- stored predictions ---------------------------------------------------------------------------

@pytest.mark.realdata
def test_teacher_stored_nifti_labels_from_totalsegmentator(real_data: Path) -> None:
    ct = read_volume(real_data / "totalseg" / "example_ct.nii.gz")
    seg = real_data / "totalseg" / "example_seg_fast_force_split.nii.gz"
    out = load_stored_prediction(seg, like=ct)
    assert out.kind == "labels" and out.labels.shape == ct.shape and 5 in out.class_ids
    assert int(out.mask([5]).sum()) == 41692
    liver = out.probabilities([5], temperature=2.0)
    assert liver.shape == (2, *ct.shape) and int(liver[1].sum()) == 41692
    np.testing.assert_array_equal(liver.sum(axis=0), 1.0)
    teacher = StoredPredictions([(real_data / "totalseg" / "example_ct.nii.gz", seg)])
    assert int(teacher.predict(ct).mask([5]).sum()) == 41692
    assert teacher.identity()["kind"] == "stored" and "/" not in str(teacher.identity()["name"])
    small = read_volume(real_data / "totalseg" / "example_ct_sm.nii.gz")
    with pytest.raises(InputError):
        load_stored_prediction(seg, like=small)


def _softmax(x: np.ndarray, axis: int = 0) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_teacher_stored_npz_and_4d_nifti(tmp_path: Path) -> None:
    volume = synthetic_volume((6, 5, 4))
    probs = _softmax(np.random.default_rng(1).normal(0, 2, (3, 6, 5, 4))).astype(np.float32)
    np.savez_compressed(tmp_path / "p.npz", probabilities=probs, class_ids=np.array([0, 5, 7]), affine=volume.affine)
    out = load_stored_prediction(tmp_path / "p.npz", like=volume)
    assert out.kind == "probs" and out.class_ids == (0, 5, 7)
    liver = out.probabilities([5])
    np.testing.assert_allclose(liver[1], probs[1], atol=1e-6)
    np.testing.assert_allclose(liver[0], probs[0] + probs[2], atol=1e-6)  # other organs count as "not liver"

    # A 4D NIfTI stored in LPS voxel order (flipped i, j) comes back in the volume's RAS order.
    flip = np.diag([-1.0, -1.0, 1.0, 1.0])
    flip[:2, 3] = [5, 4]  # voxel 0 of the flipped file is voxel (5, 4) of the RAS grid
    lps = np.moveaxis(probs, 0, -1)[::-1, ::-1]
    nib.save(nib.Nifti1Image(np.ascontiguousarray(lps), volume.affine @ flip), tmp_path / "p4d.nii.gz")
    (tmp_path / "p4d.json").write_text(json.dumps({"class_ids": [0, 5, 7]}))
    out4d = load_stored_prediction(tmp_path / "p4d.nii.gz", like=volume)
    assert out4d.class_ids == (0, 5, 7)
    np.testing.assert_allclose(out4d.scores, probs, atol=1e-6)

    np.savez(tmp_path / "l.npz", logits=np.zeros((2, 6, 5, 4), np.float32))
    assert load_stored_prediction(tmp_path / "l.npz", like=volume).class_ids == (0, 1)


def test_teacher_stored_grid_mismatch_and_lookup(tmp_path: Path) -> None:
    volume = synthetic_volume((6, 5, 4))
    np.savez(tmp_path / "wrong_shape.npz", probabilities=np.full((2, 6, 5, 3), 0.5, np.float32))
    with pytest.raises(InputError, match="not on the grid"):
        load_stored_prediction(tmp_path / "wrong_shape.npz", like=volume)
    np.savez(tmp_path / "moved.npz", probabilities=np.full((2, 6, 5, 4), 0.5, np.float32), affine=np.eye(4))
    with pytest.raises(InputError, match="voxel-to-world"):
        load_stored_prediction(tmp_path / "moved.npz", like=volume)
    labels = nib.Nifti1Image(np.zeros((6, 5, 3), np.uint8), volume.affine)
    nib.save(labels, tmp_path / "labels.nii.gz")
    with pytest.raises(InputError):
        load_stored_prediction(tmp_path / "labels.nii.gz", like=volume)
    teacher = StoredPredictions([("scans/other.nii.gz", tmp_path / "moved.npz")])
    with pytest.raises(InputError, match="case1.nii.gz"):
        teacher.predict(volume)


# --- TeacherOutput ----------------------------------------------------------------------------------

def test_teacher_output_temperature_softens_and_sharpens() -> None:
    logits = np.random.default_rng(2).normal(0, 3, (3, 4, 4, 4)).astype(np.float32)
    out = TeacherOutput(class_ids=IDS, kind="logits", scores=logits)
    by_t = {t: out.probabilities([5], temperature=t) for t in (0.5, 1.0, 2.0)}
    for t, p in by_t.items():
        assert p.shape == (2, 4, 4, 4) and p.dtype == np.float32
        np.testing.assert_allclose(p.sum(axis=0), 1.0, atol=1e-5)
        np.testing.assert_allclose(p[1], _softmax(logits / t)[1], atol=1e-5)
    # Farther from 1/2 at low temperature, closer at high.
    spread = {t: np.abs(p[1] - 0.5).mean() for t, p in by_t.items()}
    assert spread[0.5] > spread[1.0] > spread[2.0]
    # Probabilities tempered the same way give the same answer as tempered logits.
    from_probs = TeacherOutput(class_ids=IDS, kind="probs", scores=_softmax(logits))
    np.testing.assert_allclose(from_probs.probabilities([5], temperature=2.0), by_t[2.0], atol=1e-5)
    assert np.array_equal(out.labels, np.asarray(IDS)[logits.argmax(0)])
    two = out.probabilities([6, 5])
    np.testing.assert_allclose(two[1:], _softmax(logits)[[2, 1]], atol=1e-5)


def test_teacher_output_masks_and_one_hot() -> None:
    labels = np.array([0, 5, 6, 7, 5], np.uint8).reshape(5, 1, 1)
    out = TeacherOutput(class_ids=(0, 5, 6, 7), kind="labels", labels=labels)
    assert out.mask([6, 5]).ravel().tolist() == [0, 2, 1, 0, 2]
    onehot = out.probabilities([5], temperature=3.0)
    assert onehot[1].ravel().tolist() == [0, 1, 0, 0, 1] and onehot[0].ravel().tolist() == [1, 0, 1, 1, 0]
    assert out.mask([9]).sum() == 0  # an organ absent from this label map is simply empty
    for bad in ([0], [5, 5], []):
        with pytest.raises(ConfigError):
            out.mask(bad)
    scored = TeacherOutput(class_ids=IDS, kind="logits", scores=np.zeros((3, 2, 2, 2), np.float32))
    with pytest.raises(ConfigError, match="no channel"):
        scored.probabilities([9])
    with pytest.raises(ConfigError, match="temperature"):
        scored.probabilities([5], temperature=0.0)
    with pytest.raises(ConfigError, match="class_ids"):
        TeacherOutput(class_ids=(0, 5), kind="logits", scores=np.zeros((3, 2, 2, 2), np.float32))
