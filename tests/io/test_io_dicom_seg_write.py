"""A mask written as DICOM-SEG on the real dcmqi series reads back voxel-identical, without leaking names to logs."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pydicom

from edgemed.io import read_labels, read_volume
from edgemed.io._dicom_seg_write import write_dicom_seg


def test_dicom_seg_round_trip_on_the_real_series(real_data: Path, tmp_path: Path) -> None:
    series = real_data / "dcmqi_ct3slice" / "ct"
    ct = read_volume(series)
    liver = read_labels(real_data / "dcmqi_ct3slice" / "seg" / "liver.dcm", like=ct)
    mask = liver.with_array((liver.array > 0).astype(np.uint8) * 5, modality="SEG")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = write_dicom_seg(mask, series, tmp_path / "liver_seg.dcm", {5: "liver"})
    assert not any("JANCT000" in str(w.message) for w in caught)
    back = read_labels(out, like=ct)
    np.testing.assert_array_equal(back.array > 0, liver.array > 0)
    assert int((back.array > 0).sum()) == 107098
    ds = pydicom.dcmread(out)
    assert ds.Modality == "SEG" and ds.SegmentSequence[0].SegmentLabel == "liver"
    assert len(ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence) == 3
