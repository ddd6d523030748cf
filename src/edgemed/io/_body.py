"""Find the patient's body in a scan, so the student sees the body, not the table or the air around it."""

from __future__ import annotations

import numpy as np

from edgemed._ndimage import binary_dilate, binary_erode, largest_component
from edgemed.io._volume import Volume

__all__ = ["body_box"]

#: CT voxels above this are tissue (air and foam cushions lie below it, fat at about -100 HU).
BODY_THRESHOLD_HU = -500.0
#: Work at about this in-plane spacing; the box only needs to be right to a few millimetres.
_WORK_MM = 3.0
#: Structures thinner than about twice this (the table, blanket, ECG leads) are cut off.
_OPEN_MM = 7.5


def body_box(volume: Volume, margin_mm: float) -> tuple[int, int, int, int]:
    """The in-plane box (x0, x1, y0, y1), in voxels of `volume`, around the body plus a margin.

    The body is the largest connected region of tissue in the scan's axial projection, after an
    opening that detaches thin structures (the table, cables); arms held apart from the trunk are
    separate regions and fall outside. One box serves every slice, so slices stay aligned. When
    nothing body-like is found (a phantom, a crop already inside the body) the whole slice is kept.
    """
    x, y, z = volume.shape
    sx, sy, _ = volume.spacing_mm
    step_x = max(1, int(round(_WORK_MM / sx)))
    step_y = max(1, int(round(_WORK_MM / sy)))
    step_z = max(1, z // 48)
    sample = volume.array[::step_x, ::step_y, ::step_z]
    if volume.modality == "CT":
        tissue = sample > BODY_THRESHOLD_HU
    else:  # MR: no absolute scale; background is near zero
        top = float(np.percentile(sample, 99))
        tissue = sample > 0.1 * top if top > 0 else np.zeros(sample.shape, dtype=bool)
    footprint = tissue.any(axis=2)
    radius = max(1, int(round(_OPEN_MM / (step_x * sx))))
    core = binary_erode(footprint, radius)
    if not core.any():
        return 0, x, 0, y
    body = binary_dilate(largest_component(core), radius) & footprint
    xs, ys = np.flatnonzero(body.any(axis=1)), np.flatnonzero(body.any(axis=0))
    mx, my = int(np.ceil(margin_mm / sx)), int(np.ceil(margin_mm / sy))
    x0, x1 = max(0, xs[0] * step_x - mx), min(x, (xs[-1] + 1) * step_x + mx)
    y0, y1 = max(0, ys[0] * step_y - my), min(y, (ys[-1] + 1) * step_y + my)
    return int(x0), int(x1), int(y0), int(y1)
