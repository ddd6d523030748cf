"""DICOM-SEG (Segmentation Storage) onto the grid of the image it was drawn on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from edgemed.errors import InputError
from edgemed.io._deid import identifiers, redact
from edgemed.io._orient import LPS_TO_RAS
from edgemed.io._volume import Volume

__all__ = ["read_dicom_seg"]

# A frame's pixel grid must land on image voxels to within this fraction of a voxel.
_GRID_TOLERANCE_VOXELS = 0.1
_DECODE_ERRORS = (RuntimeError, NotImplementedError, ValueError)


def read_dicom_seg(path: Path, ds: Dataset, like: Volume | None) -> Volume:
    """Paint every frame of a DICOM-SEG into a label map on `like`'s voxel grid.

    Frames are placed by their ImagePositionPatient (PlanePositionSequence), not by
    ReferencedSOPInstanceUID: `Volume` keeps no UIDs (privacy), and position also works when `like`
    is a NIfTI conversion of the referenced series. Segment numbers become label values; where
    segments overlap the higher number wins and the overlap is counted in meta["overlap_voxels"].

    Args:
        path: The SEG file (for messages).
        ds: Its parsed dataset.
        like: The image the segmentation was made on, already read with `read_volume`.

    Raises:
        InputError: If `like` is missing, or a frame does not fall on `like`'s grid.
    """
    if like is None:
        raise InputError(
            f"{_name(path, ds)}: is a DICOM-SEG, whose frames only have meaning on the image they were drawn on. "
            "Pass that image: read_labels(seg_path, like=read_volume(ct_series_folder))."
        )
    frames = _frames(path, ds)
    segments = {int(item.SegmentNumber): str(item.get("SegmentLabel", f"segment {int(item.SegmentNumber)}"))
                for item in ds.get("SegmentSequence", [])}
    seg_type = str(ds.get("SegmentationType", "BINARY")).upper()
    if seg_type == "FRACTIONAL":
        frames = frames >= 0.5 * float(ds.get("MaximumFractionalValue", 255))
    top = max([*segments, int(frames.max()) if seg_type == "LABELMAP" else 0, 1])
    labels = np.zeros(like.shape, dtype=np.uint8 if top < 256 else np.uint16)
    to_voxel = np.linalg.inv(like.affine) @ LPS_TO_RAS  # LPS world (mm) → `like` voxel index
    shared = ds.get("SharedFunctionalGroupsSequence", [Dataset()])[0]
    per_frame = ds.get("PerFrameFunctionalGroupsSequence", [])
    if len(per_frame) != len(frames):
        raise InputError(
            f"{_name(path, ds)}: has {len(frames)} frames but {len(per_frame)} per-frame descriptions; the file is "
            "corrupt. Export the SEG again."
        )
    overlap = 0
    for index, (frame, groups) in enumerate(zip(frames, per_frame)):
        target = _frame_index(groups, shared, to_voxel, frame.shape, like, f"{_name(path, ds)} frame {index + 1}")
        current = labels[target]
        if seg_type == "LABELMAP":
            paint = frame != 0
            values = frame.astype(labels.dtype)
        else:
            paint = frame.astype(bool)
            values = np.full(frame.shape, _segment_number(groups, shared, path, index), dtype=labels.dtype)
        clash = paint & (current != 0) & (current != values)
        overlap += int(clash.sum())
        labels[target] = np.where(paint & ~(clash & (current > values)), values, current)
    meta: dict[str, object] = {"format": "DICOM-SEG", "segments": segments, "segmentation_type": seg_type}
    if overlap:
        meta["overlap_voxels"] = overlap
    return Volume(labels, like.affine.copy(), "SEG", _name(path, ds), meta)


def _name(path: Path, ds: Dataset) -> str:
    """The file's name for messages and Volume.source, without the patient's identifiers or UIDs."""
    return redact(path.name, identifiers([ds]))


def _frames(path: Path, ds: Dataset) -> np.ndarray:
    if "PixelData" not in ds:
        raise InputError(f"{_name(path, ds)}: is a DICOM-SEG without pixel data; the file is incomplete. Export it again.")
    try:
        frames = np.asarray(ds.pixel_array)
    except _DECODE_ERRORS as err:
        raise InputError(
            f"{_name(path, ds)}: could not decode the segmentation frames ({err}). Install the decoders "
            "(pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg) or re-export the SEG uncompressed."
        ) from err
    return frames[np.newaxis] if frames.ndim == 2 else frames


def _segment_number(groups: Dataset, shared: Dataset | None, path: Path, index: int) -> int:
    # A SEG with one segment may name it once, in the shared functional groups (highdicom does).
    for where in (groups, shared):
        if where is not None and "SegmentIdentificationSequence" in where:
            try:
                return int(where.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
            except (AttributeError, IndexError):
                break
    try:
        return int(groups.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
    except (AttributeError, IndexError) as err:
        raise InputError(
            f"{redact(path.name)}: frame {index + 1} names no segment; the SEG is incomplete. Export it again."
        ) from err


def _frame_index(groups: Dataset, shared: Dataset, to_voxel: np.ndarray, frame_shape: tuple[int, ...],
                 like: Volume, name: str) -> tuple[np.ndarray | int, ...]:
    """Index arrays that address the frame's pixels (rows, columns) inside `like`'s array."""
    try:
        position = np.array([float(v) for v in groups.PlanePositionSequence[0].ImagePositionPatient])
        orientation_group = groups if "PlaneOrientationSequence" in groups else shared
        cosines = np.array([float(v) for v in orientation_group.PlaneOrientationSequence[0].ImageOrientationPatient])
        measures_group = groups if "PixelMeasuresSequence" in groups else shared
        row_spacing, column_spacing = (float(v) for v in measures_group.PixelMeasuresSequence[0].PixelSpacing)
    except (AttributeError, IndexError, ValueError) as err:
        raise InputError(
            f"{name}: lacks its plane position, orientation or pixel spacing ({err}); the SEG is incomplete. "
            "Export it again."
        ) from err
    origin = (to_voxel @ np.append(position, 1.0))[:3]
    step_column = to_voxel[:3, :3] @ (cosines[:3] * column_spacing)  # one pixel along a row
    step_row = to_voxel[:3, :3] @ (cosines[3:] * row_spacing)  # one pixel down a column
    axes = []
    for step in (step_row, step_column):
        axis = int(np.argmax(np.abs(step)))
        unit = np.zeros(3)
        unit[axis] = np.sign(step[axis])
        if np.abs(step - unit).max() > _GRID_TOLERANCE_VOXELS / max(frame_shape):
            raise _off_grid(name, like, "its pixels are rotated or sized differently from the image voxels")
        axes.append((axis, int(unit[axis])))
    if axes[0][0] == axes[1][0] or np.abs(origin - np.round(origin)).max() > _GRID_TOLERANCE_VOXELS:
        raise _off_grid(name, like, f"its first pixel falls at voxel {np.round(origin, 2).tolist()}")
    start = np.round(origin).astype(int)
    index: list[np.ndarray | int] = [int(v) for v in start]
    for (axis, sign), length, broadcast in zip(axes, frame_shape, ((slice(None), None), (None, slice(None)))):
        idx = start[axis] + sign * np.arange(length)
        if idx.min() < 0 or idx.max() >= like.shape[axis]:
            raise _off_grid(name, like, "it extends beyond the image")
        index[axis] = idx[broadcast]
    (through,) = {0, 1, 2} - {axes[0][0], axes[1][0]}
    if not 0 <= start[through] < like.shape[through]:
        where = f"it lies at slice {start[through]}, outside the image's {like.shape[through]} slices"
        raise _off_grid(name, like, where)
    return tuple(index)


def _off_grid(name: str, like: Volume, why: str) -> InputError:
    return InputError(
        f"{name}: does not lie on the grid of {like.source or 'the image'} (shape {like.shape}): {why}. "
        "Pass as `like` the image series the segmentation was drawn on."
    )
