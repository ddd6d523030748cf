"""A DICOM-SEG generated with highdicom from a synthetic series: placement, segments, overlap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from io_testdata import SeriesWriter
from pydicom.uid import generate_uid

from edgemed.errors import InputError
from edgemed.io import Volume, check_same_grid, read_labels, read_volume

hd = pytest.importorskip("highdicom")


def _write_seg(folder: Path, positions: np.ndarray, mask: np.ndarray, out: Path) -> Path:
    """Segments of `mask` (slices in position order, rows, columns, segments) as a BINARY SEG."""
    from pydicom.sr.codedict import codes

    by_z = sorted(folder.iterdir(), key=lambda p: float(pydicom.dcmread(p).ImagePositionPatient[2]))
    sources = [pydicom.dcmread(p) for p in by_z]
    assert np.allclose([float(s.ImagePositionPatient[2]) for s in sources], positions[:, 2])
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number, segment_label=label, segmented_property_category=codes.SCT.Organ,
            segmented_property_type=codes.SCT.Liver, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
        )
        for number, label in ((1, "Liver"), (2, "Lesion"))
    ]
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=generate_uid(), series_number=9,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="edgemed tests",
        manufacturer_model_name="synthetic", software_versions="1", device_serial_number="1",
    )
    seg.save_as(out)
    return out


def test_generated_seg_lands_on_the_series_grid(write_ct_series: SeriesWriter, tmp_path: Path) -> None:
    folder, raw, positions = write_ct_series(slices=4)
    mask = np.zeros((*raw.shape, 2), dtype=bool)
    mask[1, 2:4, 3:6, 0] = True  # liver on slice 1
    mask[1:3, 3, 1:5, 1] = True  # lesion on slices 1-2, overlapping the liver at row 3, columns 3-4
    seg_path = _write_seg(folder, positions, mask, tmp_path / "seg.dcm")
    ct = read_volume(folder)
    labels = read_labels(seg_path, like=ct)
    check_same_grid(ct, labels)
    assert labels.meta["segments"] == {1: "Liver", 2: "Lesion"}
    assert labels.meta["overlap_voxels"] == 2
    expected = np.where(mask[..., 1], 2, np.where(mask[..., 0], 1, 0)).astype(np.uint8)  # higher number wins
    np.testing.assert_array_equal(labels.array, expected.transpose(2, 1, 0)[::-1, ::-1, :])
    # A folder holding just the SEG works too.
    only = tmp_path / "only_seg"
    only.mkdir()
    seg_path.rename(only / "seg.dcm")
    np.testing.assert_array_equal(read_labels(only, like=ct).array, labels.array)


def test_seg_slice_outside_like_is_refused(write_ct_series: SeriesWriter, tmp_path: Path) -> None:
    folder, raw, positions = write_ct_series(slices=4)
    mask = np.zeros((*raw.shape, 2), dtype=bool)
    mask[3, 0, 0, 0] = True
    seg_path = _write_seg(folder, positions, mask, tmp_path / "seg.dcm")
    ct = read_volume(folder)
    cropped = Volume(ct.array[:, :, :2], ct.affine)  # only the two lowest slices
    with pytest.raises(InputError, match="outside the image"):
        read_labels(seg_path, like=cropped)
