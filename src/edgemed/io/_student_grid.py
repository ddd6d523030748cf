"""The student's grid: a volume resampled in-plane, windowed, padded, and the exact way back.

Training (`edgemed.compress`) and the runtime use these same functions, so a bundle sees its
input exactly as the student saw it during distillation. numpy only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from edgemed.artifacts import PreprocessSpec
from edgemed.errors import InputError
from edgemed.io._body import body_box
from edgemed.io._resample import resample_array
from edgemed.io._volume import Volume
from edgemed.io._window import scale_to_unit, window_hu

__all__ = ["SliceGeometry", "check_scan_values", "context_stack", "from_student_grid", "student_grid_geometry",
           "to_student_grid", "prepare_volume"]

#: Voxel sizes outside this range (mm) come from a broken header (NIfTI pixdim, DICOM PixelSpacing), not a scanner.
SPACING_RANGE_MM = (0.05, 50.0)
#: No patient is longer or wider than this (mm) along any axis.
MAX_EXTENT_MM = 3000.0
#: The student grid (after in-plane resampling) may hold at most this many voxels, and a slice this many pixels.
MAX_STUDENT_VOXELS = int(os.environ.get("EDGEMED_MAX_STUDENT_VOXELS", 2**30))
MAX_STUDENT_SLICE_PIXELS = 4096 * 4096
#: Scan voxels windowed and resampled per chunk by `prepare_volume` (bounds its temporaries to ~8 MB each).
_CHUNK_VOXELS = 2**21
#: A scan whose values are all integers in [0, this] with at most `_LABEL_MAP_MAX_VALUES` distinct ones is a label map.
_LABEL_MAP_MAX_ID = 65535
_LABEL_MAP_MAX_VALUES = 64


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
    """The geometry of `volume` on the student grid described by `spec` (the body crop included).

    Raises:
        InputError: A voxel spacing outside 0.05–50 mm, an extent over 3 m, or a student grid over
            `MAX_STUDENT_VOXELS` (EDGEMED_MAX_STUDENT_VOXELS) voxels or 4096 x 4096 pixels a slice;
            all checked from the header alone, before any array is made.
    """
    _check_spacing_and_extent(volume)
    sx, sy, sz = volume.spacing_mm
    x, y, z = volume.shape
    # The size before the body crop bounds the size after it: refuse before body_box reads anything.
    _check_student_size(volume, spec, x * sx / spec.spacing_mm[0], y * sy / spec.spacing_mm[1])
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

    Works a few slices at a time (window, then in-plane resampling: both act on each slice alone,
    so the result is the same as for the whole volume at once); besides the result it allocates
    only ~8 MB chunks, never a windowed float32 copy of the scan.

    Returns:
        (Z, H, W) float32 in [0, 1] (0 = air / padding), and its geometry.

    Raises:
        InputError: As `student_grid_geometry`.
    """
    geom = student_grid_geometry(volume, spec)
    rx, ry = geom.resampled_xy
    h, w = geom.padded_hw
    ox, oy = geom.offset_xy
    x0, x1, y0, y1 = geom.box
    z = geom.volume_shape[2]
    if spec.modality == "CT":
        scale = lambda values: window_hu(values, spec.window_hu)  # noqa: E731
    else:  # MR: the percentiles are the whole volume's, computed once
        low, high = _mr_range(volume.array)
        scale = lambda values: _scale_mr(values, low, high)  # noqa: E731
    out = np.zeros((z, h, w), dtype=np.float32)
    step = max(1, _CHUNK_VOXELS // max(1, (x1 - x0) * (y1 - y0)))
    for z0 in range(0, z, step):
        chunk = scale(volume.array[x0:x1, y0:y1, z0:z0 + step].astype(np.float32, copy=False))
        res = resample_array(chunk, (rx, ry, chunk.shape[2]), order="linear")
        out[z0:z0 + chunk.shape[2], ox:ox + rx, oy:oy + ry] = np.moveaxis(res, 2, 0)
    return out, geom


def check_scan_values(volume: Volume, *, finite_only: bool = False) -> None:
    """Refuse a scan whose voxels cannot be segmented: NaN/inf voxels, a constant volume, a label map.

    Reads the array a chunk at a time (no full-size temporaries).

    Args:
        volume: The scan.
        finite_only: Check only for NaN/inf voxels.

    Raises:
        InputError: One line naming what was found and what to pass instead.
    """
    name = volume.source or "volume"
    array = volume.array
    if array.dtype.kind not in "fiu" or array.size == 0:
        return
    low, high, bad = np.inf, -np.inf, 0
    # Chunks along the axis that is outermost in memory, so each one is contiguous (fast reductions).
    axis = int(np.argmax(np.abs(array.strides)))
    step = max(1, _CHUNK_VOXELS // max(1, array.size // array.shape[axis]))
    for i0 in range(0, array.shape[axis], step):
        chunk = array[(slice(None),) * axis + (slice(i0, i0 + step),)]
        c_low, c_high = chunk.min(), chunk.max()
        if array.dtype.kind == "f" and not (np.isfinite(c_low) and np.isfinite(c_high)):
            finite = np.isfinite(chunk)
            bad += int(finite.size - np.count_nonzero(finite))
            if finite.any():
                c_low, c_high = chunk[finite].min(), chunk[finite].max()
            else:
                continue
        low, high = min(low, float(c_low)), max(high, float(c_high))
    if bad:
        raise InputError(f"{name}: {bad:,d} voxels are NaN or infinite (of {array.size:,d}); repair the file, "
                         "or replace them (e.g. with -1024 HU, air) before segmenting.")
    if finite_only or array.size == 1:  # one voxel is constant by nature; the model may still have its say
        return
    if low == high:
        raise InputError(f"{name}: every voxel is {low:g}, a constant volume with nothing to segment; the file "
                         "holds no image (an empty export or a blank series). Pass the actual scan.")
    if low < 0 or high > _LABEL_MAP_MAX_ID:
        return
    # A label map: integer values, few of them. Decide on a strided sample (~1M voxels), then confirm.
    stride = max(1, int(round((array.size / 2**20) ** (1 / 3))))
    sample = array[::stride, ::stride, ::stride]
    if array.dtype.kind == "f" and not np.array_equal(sample, np.round(sample)):
        return
    values = np.unique(sample)
    if len(values) > _LABEL_MAP_MAX_VALUES:
        return
    shown = ", ".join(f"{v:g}" for v in values[:8]) + (", ..." if len(values) > 8 else "")
    raise InputError(f"{name}: looks like a label map, not a scan: its voxels are {len(values)} distinct integers "
                     f"({shown}). Pass the CT/MR image the segmentation was made from.")


def _check_spacing_and_extent(volume: Volume) -> None:
    name = volume.source or "volume"
    spacing = tuple(float(s) for s in volume.spacing_mm)
    shown = "(" + ", ".join(f"{s:.4g}" for s in spacing) + ")"
    lo, hi = SPACING_RANGE_MM
    if not all(np.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"{name}: voxel spacing {shown} mm is not positive and finite; the header's affine is broken. "
                         "Fix the header (NIfTI pixdim / DICOM PixelSpacing) or re-export the scan.")
    if not all(lo <= s <= hi for s in spacing):
        raise InputError(f"{name}: voxel spacing {shown} mm is outside the plausible {lo:g}-{hi:g} mm; the header "
                         "(NIfTI pixdim / DICOM PixelSpacing, SliceThickness) is wrong. Fix it or re-export the scan.")
    extent = [n * s for n, s in zip(volume.shape, spacing)]
    if max(extent) > MAX_EXTENT_MM:
        ext = " x ".join(f"{e:.0f}" for e in extent)
        raise InputError(f"{name}: the scan spans {ext} mm (shape {volume.shape} at {shown} mm), more than the "
                         f"{MAX_EXTENT_MM:.0f} mm any patient does; the spacing in its header is wrong. Fix the header "
                         "or re-export the scan.")


def _check_student_size(volume: Volume, spec: PreprocessSpec, rx: float, ry: float) -> None:
    z = volume.shape[2]
    pixels = max(1.0, round(rx)) * max(1.0, round(ry))
    if pixels > MAX_STUDENT_SLICE_PIXELS or pixels * z > MAX_STUDENT_VOXELS:
        name = volume.source or "volume"
        raise InputError(
            f"{name}: at the student's {spec.spacing_mm[0]:g} x {spec.spacing_mm[1]:g} mm the scan would be "
            f"{round(rx)} x {round(ry)} x {z} = {pixels * z:.3g} voxels, over the limit of {MAX_STUDENT_VOXELS:.3g} "
            f"(EDGEMED_MAX_STUDENT_VOXELS) or {MAX_STUDENT_SLICE_PIXELS:.3g} a slice; crop the scan to the region "
            "of interest, or check the spacing in its header.")


def _mr_range(array: np.ndarray) -> tuple[float, float]:
    """normalize_mr's (0.5, 99.5) percentiles of the whole array."""
    low, high = (float(v) for v in np.percentile(array.astype(np.float32, copy=False), [0.5, 99.5]))
    return low, high


def _scale_mr(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """normalize_mr with given bounds (the same arithmetic, so chunks match the whole-volume result)."""
    return scale_to_unit(values, low, high)


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
