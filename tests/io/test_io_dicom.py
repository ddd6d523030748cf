"""Generated DICOM CT series: ordering, compression, geometry, padding and the refusals."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless
from io_testdata import PATIENT_ID, PATIENT_NAME, STUDY_DATE, SeriesWriter, expected_from_series, make_ct_slice

from edgemed.errors import InputError
from edgemed.io import Volume, read_volume


def _assert_matches_series(volume: Volume, raw: np.ndarray, positions: np.ndarray,
                           orientation: tuple[float, ...]) -> None:
    """Every stored voxel is found at its own world position in the volume, with HU = stored - 1024."""
    world, hu = expected_from_series(raw, positions, orientation)
    index = np.linalg.inv(volume.affine) @ np.c_[world, np.ones(len(world))].T
    rounded = np.round(index[:3]).astype(int)
    np.testing.assert_allclose(index[:3], rounded, atol=1e-6)
    np.testing.assert_array_equal(volume.array[rounded[0], rounded[1], rounded[2]], hu)


def test_shuffled_axial_series_with_compressed_slices_reads_back_exactly(write_ct_series: SeriesWriter) -> None:
    folder, raw, positions = write_ct_series(compressed={2: RLELossless, 4: JPEGLSLossless})
    syntaxes = {pydicom.dcmread(p).file_meta.TransferSyntaxUID for p in folder.iterdir()}
    assert {RLELossless, JPEGLSLossless, ExplicitVRLittleEndian} == syntaxes
    volume = read_volume(folder)
    assert volume.shape == (7, 6, 5)  # (columns, rows, slices)
    assert volume.array.dtype == np.float32
    assert nib.aff2axcodes(volume.affine) == ("R", "A", "S")
    np.testing.assert_allclose(volume.spacing_mm, (0.6, 0.8, 2.5))
    _assert_matches_series(volume, raw, positions, (1, 0, 0, 0, 1, 0))
    # Axial, LPS → RAS: columns and rows flip, slices stay inferior → superior.
    np.testing.assert_array_equal(volume.array, (raw.transpose(2, 1, 0)[::-1, ::-1, :] - 1024.0))


def test_jpeg2000_slices_decode_through_pylibjpeg(write_ct_series: SeriesWriter) -> None:
    # openjpeg refuses to encode tiny images, hence 32x32 slices here.
    compressed = {0: JPEG2000Lossless, 2: JPEG2000Lossless}
    folder, raw, positions = write_ct_series(slices=3, rows=32, columns=32, compressed=compressed)
    volume = read_volume(folder)
    _assert_matches_series(volume, raw, positions, (1, 0, 0, 0, 1, 0))
    assert volume.meta["transfer_syntax"] in {JPEG2000Lossless.name, ExplicitVRLittleEndian.name}


def test_coronal_series_is_canonicalised(write_ct_series: SeriesWriter) -> None:
    orientation = (1, 0, 0, 0, 0, -1)  # rows run left, columns run down; slices step posterior
    folder, raw, positions = write_ct_series(orientation=orientation, slice_step_lps=(0.0, 2.5, 0.0))
    volume = read_volume(folder)
    assert nib.aff2axcodes(volume.affine) == ("R", "A", "S")
    assert volume.shape == (7, 5, 6)
    _assert_matches_series(volume, raw, positions, orientation)


def test_series_sorted_by_position_descending_too(write_ct_series: SeriesWriter) -> None:
    folder, raw, positions = write_ct_series(slice_step_lps=(0.0, 0.0, -2.5))
    volume = read_volume(folder)
    _assert_matches_series(volume, raw, positions, (1, 0, 0, 0, 1, 0))
    assert volume.affine[2, 2] > 0


def test_non_dicom_files_are_ignored_and_meta_is_deidentified(write_ct_series: SeriesWriter) -> None:
    folder, raw, _ = write_ct_series()
    (folder / "README.txt").write_text("scan notes\n")
    (folder / "DICOMDIR.bak").write_bytes(b"\x00" * 300)
    volume = read_volume(folder)
    assert volume.shape[2] == raw.shape[0]
    assert volume.modality == "CT"
    assert volume.meta["manufacturer_model"] == "Scanner 9000"
    assert volume.meta["kvp"] == 120.0
    assert volume.meta["transfer_syntax"] == "Explicit VR Little Endian"
    text = repr(volume.meta) + volume.source
    for secret in (PATIENT_NAME, "DOE", PATIENT_ID, STUDY_DATE, "1.2.3.4"):
        assert secret not in text


def test_padding_value_becomes_lowest_real_hu(write_ct_series: SeriesWriter) -> None:
    folder, raw, _ = write_ct_series(padding_value=-2000)
    path = next(folder.iterdir())
    ds = pydicom.dcmread(path)
    pixels = ds.pixel_array.copy()
    pixels[0, :] = -2000
    ds.PixelData = pixels.tobytes()
    ds.save_as(path, enforce_file_format=True)
    volume = read_volume(folder)
    assert volume.meta["padding_voxels"] == pixels.shape[1]
    real_min = min(float(raw.min()), float(pixels[1:].min())) - 1024.0
    assert volume.array.min() == real_min > -1100


def test_single_dicom_file_reads_as_one_slice(write_ct_series: SeriesWriter) -> None:
    folder, raw, positions = write_ct_series(slices=3)
    path = next(p for p in folder.iterdir() if pydicom.dcmread(p).ImagePositionPatient[2] == positions[1][2])
    volume = read_volume(path)
    assert volume.shape == (7, 6, 1)
    np.testing.assert_allclose(volume.spacing_mm[2], 2.5)  # SliceThickness
    np.testing.assert_array_equal(volume.array[:, :, 0], raw[1].T[::-1, ::-1] - 1024.0)


def test_missing_middle_slice_is_named(write_ct_series: SeriesWriter) -> None:
    folder, _, positions = write_ct_series(slices=6)
    z_mm = positions[3][2]
    middle = next(p for p in folder.iterdir() if abs(pydicom.dcmread(p).ImagePositionPatient[2] - z_mm) < 1e-3)
    middle.unlink()
    with pytest.raises(InputError, match=r"gap .* is 5\.00 mm.*2\.50 mm.*missing"):
        read_volume(folder)


def test_two_series_in_one_folder_are_listed(write_ct_series: SeriesWriter, tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    write_ct_series(folder=folder, series_number=3, seed=1)
    rng = np.random.default_rng(2)
    other = make_ct_slice(rng.integers(0, 100, (6, 7)).astype(np.int16), (0, 0, 0), series_uid="1.2.3.99",
                          series_number=7)
    other.save_as(folder / "zz_other.dcm", enforce_file_format=True)
    with pytest.raises(InputError) as info:
        read_volume(folder)
    message = str(info.value)
    assert "2 DICOM series" in message and "series 3" in message and "series 7" in message
    assert "one series folder" in message
    assert "1.2.3.99" not in message  # no UIDs in messages either


def test_duplicate_positions_are_refused(write_ct_series: SeriesWriter) -> None:
    folder, raw, positions = write_ct_series(slices=3)
    first = next(folder.iterdir())
    ds = pydicom.dcmread(first)
    ds.SOPInstanceUID = "1.2.3.4.5.6.7"
    ds.save_as(folder / "copy.dcm", enforce_file_format=True)
    with pytest.raises(InputError, match="same position"):
        read_volume(folder)


def test_dicom_without_pixel_data(tmp_path: Path) -> None:
    ds = make_ct_slice(np.zeros((4, 4), np.int16), (0, 0, 0), series_uid="1.2.3")
    del ds.PixelData
    ds.save_as(tmp_path / "header_only.dcm", enforce_file_format=True)
    with pytest.raises(InputError, match="without pixel data"):
        read_volume(tmp_path)


def test_truncated_pixel_data(write_ct_series: SeriesWriter) -> None:
    folder, _, _ = write_ct_series(rows=40, columns=40, slices=3)
    path = sorted(folder.iterdir())[0]
    data = path.read_bytes()
    path.write_bytes(data[:-500])
    with pytest.raises(InputError, match="truncated"):
        read_volume(folder)


def test_folder_without_dicom_names_subfolders(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("nothing here")
    (tmp_path / "series_1").mkdir()
    with pytest.raises(InputError, match="no DICOM files.*series_1"):
        read_volume(tmp_path)
