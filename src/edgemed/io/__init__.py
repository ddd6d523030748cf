"""edgemed.io: medical volumes in, medical volumes out (numpy, nibabel, pydicom; never torch).

Every volume is kept in canonical RAS voxel order (+i Right, +j Anterior, +k Superior; axial
slices are `volume.array[:, :, k]`) with a 4x4 voxel → world (mm) affine, whatever the file's
own orientation. Scans come out as float32 (CT in HU); label maps as unsigned integers.

Example:
    >>> from edgemed import io
    >>> ct = io.read_volume("data/dcmqi_ct3slice/ct")            # DICOM series folder
    >>> liver = io.read_labels("data/dcmqi_ct3slice/seg/liver.dcm", like=ct)
    >>> io.check_same_grid(ct, liver)
    >>> x = io.window_hu(ct.array, window_hu=(-160, 240))
    >>> ct_15 = io.resample_to_spacing(ct, (1.5, 1.5, None), order="linear")
    >>> io.write_nifti(ct_15, "out/ct_1.5mm.nii.gz")
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "body_box",
    "BUILTIN_LABEL_MAPS",
    "LabelMap",
    "Order",
    "SliceGeometry",
    "Volume",
    "check_same_grid",
    "check_scan_values",
    "context_stack",
    "from_student_grid",
    "load_label_map",
    "normalize_mr",
    "prepare_volume",
    "read_labels",
    "RedactingLogFilter",
    "redact",
    "redacted_path",
    "read_volume",
    "resample_array",
    "resample_like",
    "resample_to_shape",
    "resample_to_spacing",
    "student_grid_geometry",
    "to_student_grid",
    "window_hu",
    "write_dicom_seg",
    "write_labels_like",
    "write_nifti",
]

# Names load their module on first use: the runtime needs the student grid (numpy only) and must
# not pull in nibabel and pydicom, which only the file readers and writers need.
_LAZY = {
    "BUILTIN_LABEL_MAPS": "_label_maps", "LabelMap": "_label_maps", "load_label_map": "_label_maps",
    "Order": "_resample", "resample_array": "_resample", "resample_like": "_resample",
    "resample_to_shape": "_resample", "resample_to_spacing": "_resample",
    "SliceGeometry": "_student_grid", "check_scan_values": "_student_grid", "context_stack": "_student_grid", "from_student_grid": "_student_grid",
    "prepare_volume": "_student_grid", "student_grid_geometry": "_student_grid", "to_student_grid": "_student_grid",
    "body_box": "_body",
    "Volume": "_volume", "check_same_grid": "_grid", "normalize_mr": "_window", "window_hu": "_window",
    "read_labels": "_read", "read_volume": "_read", "redacted_path": "_deid", "redact": "_deid", "RedactingLogFilter": "_deid", "write_dicom_seg": "_dicom_seg_write", "write_labels_like": "_nifti", "write_nifti": "_nifti",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"edgemed.io.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'edgemed.io' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
