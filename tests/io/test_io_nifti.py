"""NIfTI (and NRRD) reading into canonical RAS, label maps, and atomic writing."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from edgemed.errors import InputError, MissingDependencyError
from edgemed.io import Volume, check_same_grid, read_labels, read_volume, write_labels_like, write_nifti

LPS_AFFINE = np.array([[-2.0, 0, 0, 10], [0, -1.5, 0, 20], [0, 0, 3.0, -30], [0, 0, 0, 1]])
WriteNifti = Callable[..., Path]


def test_lps_nifti_is_reoriented_voxel_for_voxel(write_nifti_file: WriteNifti) -> None:
    stored = np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6)
    volume = read_volume(write_nifti_file(stored, LPS_AFFINE), modality="MR")
    assert nib.aff2axcodes(volume.affine) == ("R", "A", "S")
    np.testing.assert_array_equal(volume.array, stored[::-1, ::-1, :])
    for i, j, k in [(0, 0, 0), (3, 4, 5), (1, 2, 3)]:
        world = LPS_AFFINE @ [i, j, k, 1]
        ci, cj, ck = np.round(np.linalg.inv(volume.affine) @ world)[:3].astype(int)
        assert volume.array[ci, cj, ck] == stored[i, j, k]
    assert volume.modality == "MR" and "modality_guessed" not in volume.meta


def test_permuted_axes_are_canonicalised(write_nifti_file: WriteNifti) -> None:
    # Voxel axes stored as (S, R, A): a sagittal-ish acquisition order.
    affine = np.array([[0, 1.0, 0, 0], [0, 0, 1.0, 0], [1.0, 0, 0, 0], [0, 0, 0, 1]])
    stored = np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32)
    volume = read_volume(write_nifti_file(stored, affine))
    assert volume.shape == (4, 5, 3)
    np.testing.assert_array_equal(volume.array, stored.transpose(1, 2, 0))
    np.testing.assert_allclose(volume.affine, np.eye(4))


def test_modality_guess_and_scaling(write_nifti_file: WriteNifti) -> None:
    image = nib.Nifti1Image(np.full((3, 3, 3), -1000, np.int16), np.eye(4))
    image.header.set_slope_inter(2.0, 24.0)
    path = write_nifti_file(np.zeros(1), name="unused.nii")
    nib.save(image, path)
    ct = read_volume(path)
    assert ct.modality == "CT" and ct.meta["modality_guessed"] is True
    assert ct.array.dtype == np.float32 and float(ct.array[0, 0, 0]) == -1976.0


def test_singleton_4d_is_squeezed_and_real_4d_refused(write_nifti_file: WriteNifti) -> None:
    assert read_volume(write_nifti_file(np.zeros((3, 4, 5, 1), np.float32), name="one.nii.gz")).shape == (3, 4, 5)
    with pytest.raises(InputError, match="4D image of shape"):
        read_volume(write_nifti_file(np.zeros((3, 4, 5, 2), np.float32), name="two.nii.gz"))


def test_2d_nifti_refused(write_nifti_file: WriteNifti) -> None:
    with pytest.raises(InputError, match="2D image"):
        read_volume(write_nifti_file(np.zeros((3, 4), np.float32)))


def test_labels_are_unsigned_integers(write_nifti_file: WriteNifti) -> None:
    labels = read_labels(write_nifti_file(np.array([0, 5, 117, 2], np.int32).reshape(1, 2, 2), name="l.nii.gz"))
    assert labels.array.dtype == np.uint8 and labels.modality == "SEG"
    big = read_labels(write_nifti_file(np.array([0, 300.0], np.float32).reshape(1, 1, 2), name="b.nii.gz"))
    assert big.array.dtype == np.uint16 and big.array.max() == 300


def test_float_and_negative_labels_refused(write_nifti_file: WriteNifti) -> None:
    with pytest.raises(InputError, match="probability map"):
        read_labels(write_nifti_file(np.full((2, 2, 2), 0.4, np.float32), name="p.nii.gz"))
    with pytest.raises(InputError, match="negative"):
        read_labels(write_nifti_file(np.full((2, 2, 2), -1, np.int16), name="n.nii.gz"))


def test_labels_checked_against_like(write_nifti_file: WriteNifti) -> None:
    image = read_volume(write_nifti_file(np.zeros((4, 4, 4), np.float32), name="img.nii.gz"))
    shifted = np.eye(4)
    shifted[:3, 3] = 5.0
    with pytest.raises(InputError, match="not on the grid"):
        read_labels(write_nifti_file(np.zeros((4, 4, 4), np.uint8), shifted, name="lab.nii.gz"), like=image)


def test_check_same_grid_reports_all_three(write_nifti_file: WriteNifti) -> None:
    image = Volume(np.zeros((4, 4, 4), np.float32), np.diag([1.0, 1.0, 2.0, 1.0]), source="ct.nii.gz")
    labels = Volume(np.zeros((4, 4, 3), np.uint8), np.diag([1.0, 1.0, 3.0, 1.0]), "SEG", "seg.nii.gz")
    with pytest.raises(InputError) as info:
        check_same_grid(image, labels)
    message = str(info.value)
    for part in ("seg.nii.gz", "ct.nii.gz", "(4, 4, 3)", "(1.00, 1.00, 3.00)", "origin", "resample_like"):
        assert part in message
    check_same_grid(image, image.with_array(np.ones((4, 4, 4), np.uint8), modality="SEG"))


@pytest.mark.parametrize("name", ["out.nii.gz", "out.nii"])
def test_write_read_round_trip(tmp_path: Path, name: str) -> None:
    affine = np.array([[0.7, 0, 0, -100], [0, 0.7, 0, -80.5], [0, 0, 2.5, 12.25], [0, 0, 0, 1]])
    array = np.random.default_rng(1).normal(size=(5, 6, 7)).astype(np.float32)
    written = write_nifti(Volume(array, affine, "MR"), tmp_path / "sub" / name)
    back = read_volume(written, modality="MR")
    np.testing.assert_array_equal(back.array, array)
    np.testing.assert_allclose(back.affine, affine, atol=1e-5)
    assert [p.name for p in written.parent.iterdir()] == [name]  # no temp file left behind


def test_write_is_reproducible_and_atomic(tmp_path: Path) -> None:
    volume = Volume(np.ones((3, 3, 3), np.float32), np.eye(4))
    a = write_nifti(volume, tmp_path / "a.nii.gz").read_bytes()
    b = write_nifti(volume, tmp_path / "b.nii.gz").read_bytes()
    assert a == b
    with pytest.raises(InputError, match=r"\.nii"):
        write_nifti(volume, tmp_path / "c.nrrd")


def test_write_labels_like(tmp_path: Path) -> None:
    like = Volume(np.zeros((3, 4, 5), np.float32), np.diag([2.0, 2.0, 3.0, 1.0]), source="ct.nii.gz")
    mask = np.zeros((3, 4, 5), bool)
    mask[1, 2, 3] = True
    path = write_labels_like(mask, like, tmp_path / "mask.nii.gz")
    labels = read_labels(path, like=like)
    assert labels.array.dtype == np.uint8 and labels.array.sum() == 1 and labels.array[1, 2, 3] == 1
    with pytest.raises(InputError, match="differs from the image grid"):
        write_labels_like(np.zeros((3, 4, 4), np.uint8), like, tmp_path / "bad.nii.gz")
    with pytest.raises(InputError, match="integer"):
        write_labels_like(np.zeros((3, 4, 5), np.float32), like, tmp_path / "bad.nii.gz")
    big = write_labels_like(np.full((3, 4, 5), 7, np.int64), like, tmp_path / "i64.nii.gz")
    assert read_labels(big).array.max() == 7


def test_nrrd_reads_through_pynrrd(tmp_path: Path) -> None:
    nrrd = pytest.importorskip("nrrd")
    data = np.arange(24, dtype=np.int16).reshape(2, 3, 4)
    header = {"space": "left-posterior-superior", "space directions": np.diag([0.5, 0.5, 2.0]),
              "space origin": np.array([10.0, 20.0, 30.0])}
    nrrd.write(str(tmp_path / "x.nrrd"), data, header)
    volume = read_volume(tmp_path / "x.nrrd", modality="CT")
    np.testing.assert_array_equal(volume.array, data[::-1, ::-1, :])
    np.testing.assert_allclose(volume.affine @ [1, 2, 0, 1], [-10.0, -20.0, 30.0, 1.0])  # stored (0,0,0)
    nrrd.write(str(tmp_path / "flat.nrrd"), data)
    with pytest.raises(InputError, match="patient space"):
        read_volume(tmp_path / "flat.nrrd")


def test_nrrd_without_pynrrd_names_the_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "x.nrrd"
    path.write_bytes(b"NRRD0004\n")
    monkeypatch.setitem(sys.modules, "nrrd", None)  # as if pynrrd were not installed
    with pytest.raises(MissingDependencyError, match=r"pip install pynrrd"):
        read_labels(path)
