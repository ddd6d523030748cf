"""The student's grid: a volume resampled in-plane, windowed, padded, and the exact way back.

Training (`edgemed.compress`) and the runtime use these same functions, so a bundle sees its
input exactly as the student saw it during distillation. numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgemed.artifacts import PreprocessSpec
from edgemed.io._body import body_box
from edgemed.io._resample import resample_array
from edgemed.io._volume import Volume
from edgemed.io._window import normalize_mr, window_hu

__all__ = ["SliceGeometry", "context_stack", "from_student_grid", "student_grid_geometry", "to_student_grid",
           "prepare_volume"]


@dataclass(frozen=True)
class SliceGeometry:
    """Where the student's (Z, H, W) grid sits relative to the volume's (X, Y, Z) grid.

    Attributes:
        volume_shape: The original (X, Y, Z).
        resampled_xy: (X', Y') after in-plane resampling to the spec's spacing.
        padded_hw: (H, W) after padding X', Y' to the network stride.
        offset_xy: Where the resampled image starts inside the padded one.
        context_step: Distance between 2.5D context slices, in slices (may be fractional).
        crop_xy: The in-plane box (x0, x1, y0, y1) of the volume that was resampled (the body
            crop); the rest of the volume is background in the student's output.
    """

    volume_shape: tuple[int, int, int]
    resampled_xy: tuple[int, int]
    padded_hw: tuple[int, int]
    offset_xy: tuple[int, int]
    context_step: float = 1.0
    crop_xy: tuple[int, int, int, int] | None = None

    @property
    def box(self) -> tuple[int, int, int, int]:
        """(x0, x1, y0, y1): the crop, or the whole slice."""
        x, y, _ = self.volume_shape
        return self.crop_xy if self.crop_xy is not None else (0, x, 0, y)


def student_grid_geometry(volume: Volume, spec: PreprocessSpec) -> SliceGeometry:
    """The geometry of `volume` on the student grid described by `spec` (the body crop included)."""
    sx, sy, sz = volume.spacing_mm
    x, y, z = volume.shape
    crop = body_box(volume, spec.body_margin_mm) if spec.body_crop else None
    x0, x1, y0, y1 = crop if crop is not None else (0, x, 0, y)
    rx = max(1, int(round((x1 - x0) * sx / spec.spacing_mm[0])))
    ry = max(1, int(round((y1 - y0) * sy / spec.spacing_mm[1])))
    m = spec.pad_multiple
    h, w = -(-rx // m) * m, -(-ry // m) * m
    step = spec.context_spacing_mm / sz if spec.context_spacing_mm else 1.0
    return SliceGeometry((x, y, z), (rx, ry), (h, w), ((h - rx) // 2, (w - ry) // 2), step, crop)


def prepare_volume(volume: Volume, spec: PreprocessSpec) -> tuple[np.ndarray, SliceGeometry]:
    """Intensity-normalise, resample in-plane and pad a volume.

    Returns:
        (Z, H, W) float32 in [0, 1] (0 = air / padding), and its geometry.
    """
    geom = student_grid_geometry(volume, spec)
    values = volume.array.astype(np.float32, copy=False)
    scaled = window_hu(values, spec.window_hu) if spec.modality == "CT" else normalize_mr(values)
    return to_student_grid(scaled, geom, order="linear"), geom


def to_student_grid(array: np.ndarray, geom: SliceGeometry, *, order: str) -> np.ndarray:
    """Move an (X, Y, Z) or (C, X, Y, Z) array onto the student grid: (Z, H, W) or (Z, C, H, W).

    Padding is 0, which is air for images and background for labels and for organ probabilities
    (channel 0, background, is padded with 1).
    """
    rx, ry = geom.resampled_xy
    h, w = geom.padded_hw
    ox, oy = geom.offset_xy
    z = geom.volume_shape[2]
    x0, x1, y0, y1 = geom.box
    array = array[..., x0:x1, y0:y1, :]
    if array.ndim == 3:
        res = resample_array(array, (rx, ry, z), order=order)
        out = np.zeros((z, h, w), dtype=res.dtype)
        out[:, ox:ox + rx, oy:oy + ry] = np.moveaxis(res, 2, 0)
        return out
    chans = array.shape[0]
    out = np.zeros((z, chans, h, w), dtype=np.float32)
    out[:, 0] = 1.0  # padding is background
    for c in range(chans):
        res = resample_array(array[c], (rx, ry, z), order=order)
        out[:, c, ox:ox + rx, oy:oy + ry] = np.moveaxis(res, 2, 0)
    return out


def from_student_grid(scores: np.ndarray, geom: SliceGeometry) -> np.ndarray:
    """Move (Z, C, H, W) student scores back to the volume grid as (C, X, Y, Z), linear interpolation.

    Outside the body crop the result is background (channel 0 = 1).
    """
    rx, ry = geom.resampled_xy
    ox, oy = geom.offset_xy
    x, y, z = geom.volume_shape
    x0, x1, y0, y1 = geom.box
    crop = scores[:, :, ox:ox + rx, oy:oy + ry]
    full = (x0, x1, y0, y1) == (0, x, 0, y)
    out = np.empty((scores.shape[1], x, y, z), dtype=np.float32) if full else np.zeros((scores.shape[1], x, y, z),
                                                                                           dtype=np.float32)
    if not full:
        out[0] = 1.0
    for c in range(scores.shape[1]):
        out[c, x0:x1, y0:y1] = resample_array(np.ascontiguousarray(np.moveaxis(crop[:, c], 0, 2)),
                                              (x1 - x0, y1 - y0, z), order="linear")
    return out


def context_stack(prepared: np.ndarray, slices: np.ndarray | list[int], context: int, *,
                  step: float = 1.0) -> np.ndarray:
    """2.5D input for axial slices `slices` of a (Z, H, W) array: (N, 2*context+1, H, W).

    Neighbour i sits `i * step` slices away (linear interpolation along z when `step` is not a
    whole number); neighbours beyond the first or last slice repeat the edge slice.
    """
    ks = np.asarray(slices, dtype=np.float64)
    pos = np.clip(ks[:, None] + np.arange(-context, context + 1)[None, :] * step, 0, prepared.shape[0] - 1)
    lo = np.floor(pos).astype(np.int64)
    frac = (pos - lo).astype(np.float32)
    if not frac.any():
        return prepared[lo]
    hi = np.minimum(lo + 1, prepared.shape[0] - 1)
    w = frac[:, :, None, None]
    return prepared[lo] * (1 - w) + prepared[hi] * w
