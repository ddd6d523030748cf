"""Every bad input becomes an InputError that says what to do, with the cause chained."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from io_testdata import SeriesWriter

from edgemed.errors import ConfigError, InputError
from edgemed.io import read_labels, read_volume


def test_missing_path() -> None:
    with pytest.raises(InputError, match="does not exist"):
        read_volume("/nonexistent/scan.nii.gz")


def test_empty_file(tmp_path: Path) -> None:
    (tmp_path / "scan.nii.gz").touch()
    with pytest.raises(InputError, match="empty"):
        read_volume(tmp_path / "scan.nii.gz")


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no DICOM files"):
        read_volume(tmp_path)


def _valid_nifti_bytes() -> bytes:
    image = nib.Nifti1Image(np.arange(4000, dtype=np.float32).reshape(10, 20, 20), np.eye(4))
    return image.to_bytes()


def test_truncated_gzip_nifti(tmp_path: Path) -> None:
    path = tmp_path / "cut.nii.gz"
    path.write_bytes(gzip.compress(_valid_nifti_bytes())[:700])
    with pytest.raises(InputError, match="corrupt or truncated") as info:
        read_volume(path)
    assert info.value.__cause__ is not None


def test_truncated_plain_nifti(tmp_path: Path) -> None:
    path = tmp_path / "cut.nii"
    path.write_bytes(_valid_nifti_bytes()[:2000])
    with pytest.raises(InputError, match="corrupt or truncated"):
        read_volume(path)


def test_garbage_with_nifti_suffix(tmp_path: Path) -> None:
    path = tmp_path / "scan.nii.gz"
    path.write_bytes(b"this is not a gzip stream" * 40)
    with pytest.raises(InputError, match="could not read it as NIfTI"):
        read_volume(path)
    plain = tmp_path / "scan.nii"
    plain.write_bytes(b"\x00" * 400)
    with pytest.raises(InputError, match="could not read it as NIfTI"):
        read_volume(plain)


def test_neither_nifti_nor_dicom(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 200)
    with pytest.raises(InputError, match="neither NIfTI, NRRD nor DICOM"):
        read_volume(path)


def test_rgb_nifti(tmp_path: Path) -> None:
    rgb = np.zeros((4, 4, 1), dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    path = tmp_path / "render.nii.gz"
    nib.save(nib.Nifti1Image(rgb, np.eye(4)), path)
    with pytest.raises(InputError, match="RGB"):
        read_volume(path)


def test_unknown_modality_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="modality"):
        read_volume(tmp_path, modality="PET")


def test_image_series_passed_to_read_labels(write_ct_series: SeriesWriter) -> None:
    folder, _, _ = write_ct_series(slices=2)
    with pytest.raises(InputError, match="exactly one DICOM-SEG"):
        read_labels(folder)
    with pytest.raises(InputError, match="not a DICOM-SEG"):
        read_labels(next(folder.iterdir()))


def test_errors_are_value_errors_for_callers_that_catch_broadly() -> None:
    assert issubclass(InputError, ValueError) and issubclass(ConfigError, ValueError)
