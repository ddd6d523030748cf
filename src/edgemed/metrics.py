"""Segmentation metrics (numpy): Dice and HD95 per organ."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["dice", "dice_per_label", "hd95_mm"]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks; 1.0 when both are empty (nothing to find, nothing found)."""
    a = a.astype(bool, copy=False)
    b = b.astype(bool, copy=False)
    total = int(a.sum()) + int(b.sum())
    if total == 0:
        return 1.0
    return 2.0 * int(np.logical_and(a, b).sum()) / total


def dice_per_label(pred: np.ndarray, ref: np.ndarray, labels: Sequence[int]) -> dict[int, float]:
    """Dice of `pred == l` vs `ref == l` for each label l."""
    return {int(lab): dice(pred == lab, ref == lab) for lab in labels}


def hd95_mm(a: np.ndarray, b: np.ndarray, spacing_mm: Sequence[float]) -> float:
    """95th-percentile symmetric Hausdorff distance between mask surfaces, in mm.

    Returns 0.0 when both masks are empty and inf when exactly one is.
    """
    from scipy import ndimage

    a = a.astype(bool, copy=False)
    b = b.astype(bool, copy=False)
    if not a.any() and not b.any():
        return 0.0
    if not a.any() or not b.any():
        return float("inf")
    surf_a = a & ~ndimage.binary_erosion(a)
    surf_b = b & ~ndimage.binary_erosion(b)
    dist_to_b = ndimage.distance_transform_edt(~surf_b, sampling=spacing_mm)
    dist_to_a = ndimage.distance_transform_edt(~surf_a, sampling=spacing_mm)
    return float(np.percentile(np.concatenate([dist_to_b[surf_a], dist_to_a[surf_b]]), 95))
