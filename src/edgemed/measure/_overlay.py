"""overlay.png: three axial slices through the organ, reference contour green, student red (matplotlib, lazily)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from edgemed._atomic import atomic_file

__all__ = ["SOFT_TISSUE_WINDOW_HU", "draw_overlay", "organ_slices"]

SOFT_TISSUE_WINDOW_HU = (-160.0, 240.0)  # level 40, width 400


def organ_slices(masks: Sequence[np.ndarray], count: int = 3) -> list[int]:
    """`count` axial slice indices at 25/50/75 % of the organ's z-extent (the union of `masks`).

    Falls back to the middle of the volume when every mask is empty.
    """
    union = np.zeros(masks[0].shape, dtype=bool)
    for m in masks:
        union |= m.astype(bool, copy=False)
    depth = union.shape[2]
    zs = np.flatnonzero(union.any(axis=(0, 1)))
    lo, hi = (int(zs[0]), int(zs[-1])) if zs.size else (0, depth - 1)
    picks = [int(round(lo + (hi - lo) * (i + 1) / (count + 1))) for i in range(count)]
    return picks


def draw_overlay(ct: np.ndarray, spacing_mm: Sequence[float], student: np.ndarray, reference: np.ndarray | None,
                 path: str | os.PathLike[str], *, title: str, reference_name: str = "teacher") -> Path:
    """Draw three axial slices of `ct` with the reference (green) and student (red) contours; write a PNG.

    Args:
        ct: (X, Y, Z) HU in canonical RAS order.
        spacing_mm: Voxel spacing (x, y, z), for the aspect ratio.
        student: (X, Y, Z) boolean organ mask of the student.
        reference: The same for the reference (teacher or ground truth), or None.
        path: The PNG to write (atomically).
        title: Figure title (e.g. the Dice).
        reference_name: Legend name of the reference.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib import pyplot as plt
    from matplotlib.lines import Line2D

    masks = [student] if reference is None else [reference, student]
    zs = organ_slices(masks)
    lo, hi = SOFT_TISSUE_WINDOW_HU
    fig, axes = plt.subplots(1, len(zs), figsize=(4 * len(zs), 4.4), squeeze=False)
    try:
        for ax, z in zip(axes[0], zs):
            # RAS: x to the patient's right; radiological view puts it on the viewer's left, anterior up.
            ax.imshow(ct[:, :, z].T, cmap="gray", vmin=lo, vmax=hi, origin="lower",
                      aspect=float(spacing_mm[1]) / float(spacing_mm[0]), interpolation="nearest")
            for mask, colour in ((reference, "lime"), (student, "red")):
                if mask is not None and mask[:, :, z].any() and not mask[:, :, z].all():
                    ax.contour(mask[:, :, z].T.astype(np.float32), levels=[0.5], colors=colour, linewidths=1.2,
                               origin="lower")
            ax.invert_xaxis()
            ax.set_title(f"axial slice {z}", fontsize=9)
            ax.set_axis_off()
        handles = [Line2D([], [], color="red", label="student")]
        if reference is not None:
            handles.insert(0, Line2D([], [], color="lime", label=reference_name))
        fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False)
        fig.suptitle(title, fontsize=11)
        target = Path(path)
        with atomic_file(target) as tmp:
            fig.savefig(tmp, format="png", dpi=100, bbox_inches="tight")
    finally:
        plt.close(fig)
    return target
