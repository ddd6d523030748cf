"""Fixtures for the io tests: synthetic DICOM CT series and NIfTI files written to tmp_path."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from io_testdata import SeriesWriter, make_ct_slice
from pydicom.uid import generate_uid


@pytest.fixture
def write_ct_series(tmp_path: Path) -> SeriesWriter:
    """Write a synthetic CT series with shuffled file names; returns (folder, raw, positions).

    `compressed` maps a slice index (in position order) to the transfer syntax UID to encode it with.
    """

    def write(folder_name: str = "series", *, slices: int = 5, rows: int = 6, columns: int = 7,
              slice_step_lps: Sequence[float] = (0.0, 0.0, 2.5), orientation: Sequence[float] = (1, 0, 0, 0, 1, 0),
              compressed: Mapping[int, str] | None = None, padding_value: int | None = None, seed: int = 0,
              series_number: int = 3, folder: Path | None = None) -> tuple[Path, np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        target = folder or tmp_path / folder_name
        target.mkdir(parents=True, exist_ok=True)
        raw = rng.integers(0, 2000, size=(slices, rows, columns)).astype(np.int16)
        origin = np.array([-50.0, 30.0, 100.0])
        positions = origin + np.arange(slices)[:, None] * np.asarray(slice_step_lps, dtype=float)
        series_uid = generate_uid()
        names = [f"IM{n:04d}.dcm" for n in rng.permutation(slices)]  # file order ≠ position order
        for k in range(slices):
            ds = make_ct_slice(raw[k], positions[k], series_uid=series_uid, orientation=orientation,
                               series_number=series_number, padding_value=padding_value)
            if compressed and k in compressed:
                ds.compress(compressed[k], raw[k])
            ds.save_as(target / names[k], enforce_file_format=True)
        return target, raw, positions

    return write


@pytest.fixture
def write_nifti_file(tmp_path: Path) -> Callable[..., Path]:
    """Write an array with nibabel (bypassing edgemed) and return the path."""

    def write(array: np.ndarray, affine: np.ndarray | None = None, name: str = "image.nii.gz") -> Path:
        path = tmp_path / name
        nib.save(nib.Nifti1Image(array, np.eye(4) if affine is None else affine), path)
        return path

    return write
