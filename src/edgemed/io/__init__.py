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

from edgemed.io._grid import check_same_grid
from edgemed.io._label_maps import BUILTIN_LABEL_MAPS, LabelMap, load_label_map
from edgemed.io._window import normalize_mr, window_hu
from edgemed.io._nifti import write_labels_like, write_nifti
from edgemed.io._read import read_labels, read_volume
from edgemed.io._resample import Order, resample_array, resample_like, resample_to_shape, resample_to_spacing
from edgemed.io._student_grid import (
    SliceGeometry,
    context_stack,
    from_student_grid,
    prepare_volume,
    student_grid_geometry,
    to_student_grid,
)
from edgemed.io._volume import Volume

__all__ = [
    "BUILTIN_LABEL_MAPS",
    "LabelMap",
    "Order",
    "SliceGeometry",
    "Volume",
    "check_same_grid",
    "context_stack",
    "from_student_grid",
    "load_label_map",
    "normalize_mr",
    "prepare_volume",
    "read_labels",
    "read_volume",
    "resample_array",
    "resample_like",
    "resample_to_shape",
    "resample_to_spacing",
    "student_grid_geometry",
    "to_student_grid",
    "window_hu",
    "write_labels_like",
    "write_nifti",
]
