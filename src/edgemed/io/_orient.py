"""Voxel-order bookkeeping: bring any (array, affine) pair into canonical RAS order."""

from __future__ import annotations

import numpy as np
from nibabel import orientations

from edgemed.errors import InputError

__all__ = ["LPS_TO_RAS", "to_canonical"]

# DICOM and ITK/NRRD world coordinates are LPS (+x Left, +y Posterior); NIfTI and edgemed are RAS.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def to_canonical(array: np.ndarray, affine: np.ndarray, *, source: str) -> tuple[np.ndarray, np.ndarray]:
    """Reorder the voxels of a 3D array so that +i is Right, +j Anterior, +k Superior.

    Only axis permutations and flips are applied (as nibabel's `as_closest_canonical`): voxel values
    are never interpolated, and an oblique affine stays oblique.

    Args:
        array: Voxel values, 3D, in the file's own order.
        affine: 4x4 voxel → RAS world (mm) matrix of `array`.
        source: A short name for messages.

    Returns:
        The reordered array (a contiguous copy unless already canonical) and its affine.

    Raises:
        InputError: If the affine is singular or not finite (a broken header).
    """
    affine = np.asarray(affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(
            f"{source}: the voxel-to-world matrix is singular or not finite ({affine[:3].tolist()}); "
            "the header geometry is broken. Re-export the image with its orientation, or fix the header."
        )
    ornt = orientations.io_orientation(affine)
    transform = orientations.ornt_transform(ornt, orientations.axcodes2ornt(("R", "A", "S")))
    if np.array_equal(transform, [[0, 1], [1, 1], [2, 1]]):
        return array, affine
    canonical = np.ascontiguousarray(orientations.apply_orientation(array, transform))
    new_affine = affine @ orientations.inv_ornt_aff(transform, array.shape)
    return canonical, new_affine
