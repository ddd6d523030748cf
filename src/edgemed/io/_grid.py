"""Grid agreement between an image and a label map."""

from __future__ import annotations

import numpy as np

from edgemed.errors import InputError
from edgemed.io._volume import Volume

__all__ = ["check_same_grid"]


def check_same_grid(image: Volume, labels: Volume, *, atol_mm: float = 0.01) -> None:
    """Check that `labels` lies voxel for voxel on `image`'s grid.

    Both must have the same shape and the same affine (spacing, directions, origin) to within
    `atol_mm`. Comparing affines, not only shapes, catches the classic slab mix-up where a label
    map of a sub-volume carries the header of the full scan, or vice versa.

    Args:
        image: The scan.
        labels: The label map (or any second volume) to check.
        atol_mm: Largest allowed difference of any affine entry, in mm.

    Raises:
        InputError: Naming both shapes, spacings and origins and what to do next.
    """
    if image.shape == labels.shape and np.allclose(image.affine, labels.affine, rtol=0.0, atol=atol_mm):
        return
    directions_differ = not np.allclose(_directions(image), _directions(labels), atol=1e-3)
    raise InputError(
        f"{labels.source or 'labels'} is not on the grid of {image.source or 'the image'}: "
        f"shape {labels.shape} vs {image.shape}, spacing {_fmt(labels.spacing_mm)} vs {_fmt(image.spacing_mm)} mm, "
        f"origin {_fmt(labels.affine[:3, 3])} vs {_fmt(image.affine[:3, 3])} mm"
        + (", and the axis directions differ" if directions_differ else "")
        + ". Pass the label map made from this image; if both cover the same anatomy, resample it with "
        "resample_like(labels, image, order='nearest')."
    )


def _directions(volume: Volume) -> np.ndarray:
    return volume.affine[:3, :3] / np.linalg.norm(volume.affine[:3, :3], axis=0)


def _fmt(values: object) -> str:
    return "(" + ", ".join(f"{float(v):.2f}" for v in values) + ")"  # type: ignore[attr-defined]
