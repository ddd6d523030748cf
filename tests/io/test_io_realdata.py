"""Real scans from ../shared/data: TotalSegmentator NIfTI and the dcmqi DICOM CT + DICOM-SEG."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from nibabel import orientations

from edgemed.errors import InputError
from edgemed.io import check_same_grid, read_labels, read_volume

pytestmark = pytest.mark.realdata


def test_example_ct_reads_canonical_3mm_hu(real_data: Path) -> None:
    ct = read_volume(real_data / "totalseg" / "example_ct.nii.gz")
    assert ct.shape == (122, 101, 112)
    np.testing.assert_allclose(ct.spacing_mm, (3.0, 3.0, 3.0), atol=1e-4)
    assert nib.aff2axcodes(ct.affine) == ("R", "A", "S")
    assert ct.array.dtype == np.float32
    assert (ct.array.min(), ct.array.max()) == (-1207.0, 3382.0)  # README: int32, HU -1207..3382
    np.testing.assert_allclose(ct.affine[:3, 3], (-177.96, 11.32, 94.3), atol=0.01)
    assert ct.modality == "CT"


def test_example_mr_on_disk_lps_comes_out_canonical(real_data: Path) -> None:
    path = real_data / "totalseg" / "example_mr_sm.nii.gz"
    on_disk = nib.load(path)
    assert nib.aff2axcodes(on_disk.affine) == ("L", "P", "S")
    mr = read_volume(path)
    assert mr.shape == (117, 91, 20)
    assert nib.aff2axcodes(mr.affine) == ("R", "A", "S")
    assert mr.modality == "MR"
    assert (mr.array.min(), mr.array.max()) == (-47.0, 833.0)
    # Same voxel, same world point: the first stored voxel is now at the far corner in i and j.
    stored = np.asanyarray(on_disk.dataobj)
    assert mr.array[-1, -1, 0] == stored[0, 0, 0]
    np.testing.assert_allclose(mr.affine @ [116, 90, 0, 1], on_disk.affine @ [0, 0, 0, 1], atol=1e-3)


def test_force_split_labels_lie_on_the_ct_grid(real_data: Path) -> None:
    ct = read_volume(real_data / "totalseg" / "example_ct.nii.gz")
    labels = read_labels(real_data / "totalseg" / "example_seg_fast_force_split.nii.gz", like=ct)
    check_same_grid(ct, labels)
    assert labels.modality == "SEG"
    assert np.issubdtype(labels.array.dtype, np.integer)
    assert int((labels.array == 5).sum()) == 41692  # liver


def test_slab_labels_against_full_ct_fail_with_a_clear_message(real_data: Path) -> None:
    ct = read_volume(real_data / "totalseg" / "example_ct.nii.gz")
    slab = read_labels(real_data / "totalseg" / "example_seg_fast.nii.gz")
    with pytest.raises(InputError) as info:
        check_same_grid(ct, slab)
    message = str(info.value)
    assert "(122, 101, 30)" in message and "(122, 101, 112)" in message
    assert "example_seg_fast.nii.gz" in message and "resample_like" in message


def test_dicom_ct_applies_rescale_and_padding(real_data: Path) -> None:
    folder = real_data / "dcmqi_ct3slice" / "ct"
    ct = read_volume(folder)
    assert ct.shape == (512, 512, 3)
    np.testing.assert_allclose(ct.spacing_mm, (0.810547, 0.810547, 1.0), atol=1e-5)
    assert nib.aff2axcodes(ct.affine) == ("R", "A", "S")
    np.testing.assert_allclose(ct.affine[2, 3], -128.69, atol=1e-3)  # k=0 is the most inferior slice (03.dcm)
    raw = pydicom.dcmread(folder / "03.dcm").pixel_array  # (row, column) in LPS
    padded = raw == -2000
    assert padded.any()
    hu = ct.array[::-1, ::-1, 0].T  # back to (row, column), LPS
    np.testing.assert_array_equal(hu[~padded], raw[~padded].astype(np.float32) - 1024.0)
    assert ct.array.min() == -1024.0  # padding (-2000 - 1024 = -3024) became the lowest real HU
    np.testing.assert_array_equal(hu[padded], -1024.0)
    assert ct.meta["modality"] == "CT" and ct.meta["kvp"] == 120.0
    assert ct.meta["manufacturer_model"] == "LightSpeed Ultra"


def test_dicom_meta_carries_nothing_identifying(real_data: Path) -> None:
    ct = read_volume(real_data / "dcmqi_ct3slice" / "ct")
    text = repr(ct.meta) + ct.source
    for secret in ("JANCT000", "99000", "2003", "20030417", "1.2.392"):
        assert secret not in text


def test_dicom_seg_matches_the_nrrd_copy_voxel_for_voxel(real_data: Path) -> None:
    nrrd = pytest.importorskip("nrrd")
    data = real_data / "dcmqi_ct3slice"
    ct = read_volume(data / "ct")
    seg = read_labels(data / "seg" / "liver.dcm", like=ct)
    check_same_grid(ct, seg)
    assert seg.meta["segments"] == {1: "Liver"}
    assert int((seg.array == 1).sum()) == 107098
    assert [int((seg.array[:, :, k] == 1).sum()) for k in range(3)] == [36233, 35645, 35220]

    # The NRRD, oriented independently of edgemed: LPS space directions/origin → RAS → canonical.
    voxels, header = nrrd.read(str(data / "seg" / "liver_seg.nrrd"))
    assert header["space"] == "left-posterior-superior"
    affine_lps = np.eye(4)
    affine_lps[:3, :3] = np.asarray(header["space directions"]).T
    affine_lps[:3, 3] = header["space origin"]
    affine_ras = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps
    transform = orientations.ornt_transform(orientations.io_orientation(affine_ras), orientations.axcodes2ornt("RAS"))
    canonical = orientations.apply_orientation(voxels, transform)
    canonical_affine = affine_ras @ orientations.inv_ornt_aff(transform, voxels.shape)
    np.testing.assert_allclose(canonical_affine, ct.affine, atol=1e-3)
    np.testing.assert_array_equal(seg.array, canonical.astype(seg.array.dtype))

    # edgemed's own NRRD reader agrees too, and the liver is soft tissue.
    from_nrrd = read_labels(data / "seg" / "liver_seg.nrrd", like=ct)
    np.testing.assert_array_equal(from_nrrd.array, seg.array)
    assert 30.0 < float(ct.array[seg.array == 1].mean()) < 45.0  # README: mean 37.3 HU


def test_dicom_seg_needs_like(real_data: Path) -> None:
    with pytest.raises(InputError, match="like="):
        read_labels(real_data / "dcmqi_ct3slice" / "seg" / "liver.dcm")


def test_dicom_seg_on_the_wrong_grid_is_refused(real_data: Path) -> None:
    wrong = read_volume(real_data / "totalseg" / "example_ct.nii.gz")
    with pytest.raises(InputError, match="does not lie on the grid"):
        read_labels(real_data / "dcmqi_ct3slice" / "seg" / "liver.dcm", like=wrong)


def test_seg_passed_to_read_volume_points_to_read_labels(real_data: Path) -> None:
    with pytest.raises(InputError, match="read_labels"):
        read_volume(real_data / "dcmqi_ct3slice" / "seg" / "liver.dcm")
