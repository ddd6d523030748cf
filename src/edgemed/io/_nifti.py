"""NIfTI-1/2 reading and atomic writing (nibabel)."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from edgemed._atomic import atomic_file
from edgemed.errors import InputError
from edgemed.io._volume import Volume

__all__ = ["NIFTI_SUFFIXES", "load_nifti", "write_labels_like", "write_nifti"]

NIFTI_SUFFIXES = (".nii", ".nii.gz")

# What nibabel raises for a truncated, corrupt or foreign file: a bad header (ImageFileError,
# ValueError), a cut gzip stream (EOFError, zlib.error, gzip.BadGzipFile which is an OSError).
_READ_ERRORS = (ImageFileError, ValueError, EOFError, OSError, zlib.error)


def load_nifti(path: Path, *, as_labels: bool) -> tuple[np.ndarray, np.ndarray]:
    """Read a NIfTI file's voxels and affine in the file's own voxel order.

    Args:
        path: A `.nii` or `.nii.gz` file.
        as_labels: Keep the stored integer values (label maps) instead of scaled float32.

    Returns:
        A 3D array (float32, or the stored dtype when `as_labels`) and its 4x4 RAS affine.

    Raises:
        InputError: If the file is corrupt or truncated, or not 3D (a 4D file with one volume is
            squeezed to 3D).
    """
    try:
        image = nib.load(os.fspath(path))
    except _READ_ERRORS as err:
        raise _corrupt(path, err) from err
    shape = tuple(int(s) for s in image.shape)
    stored = image.get_data_dtype()
    _check_declared_size(path, shape, stored.itemsize)
    if stored.names is not None:
        raise InputError(
            f"{path.name}: holds {len(stored.names)}-channel (RGB) voxels; edgemed reads grey-level "
            "scans and integer label maps. Pass the original scan, not a rendering."
        )
    try:
        array = np.asanyarray(image.dataobj) if as_labels else image.get_fdata(dtype=np.float32)
        affine = np.asarray(image.affine, dtype=np.float64)
    except _READ_ERRORS as err:
        raise _corrupt(path, err) from err
    return _as_3d(array, shape, path.name), affine


# A header may claim any size: refuse what no scan needs (4 G voxels) or what the file cannot hold.
MAX_VOXELS = int(os.environ.get("EDGEMED_MAX_VOXELS", 2**32))
# Label maps compress up to a few hundred times; a gzip "bomb" compresses far more.
_MAX_GZIP_RATIO = 2000


def _check_declared_size(path: Path, shape: tuple[int, ...], itemsize: int) -> None:
    voxels = int(np.prod(shape, dtype=np.float64)) if shape else 0
    if any(s < 0 for s in shape) or voxels > MAX_VOXELS:
        raise InputError(f"{path.name}: its header declares shape {shape} ({voxels:.3g} voxels), beyond the "
                         f"{MAX_VOXELS:.3g} edgemed reads (EDGEMED_MAX_VOXELS). The header is corrupt, or split the "
                         "volume first.")
    size = path.stat().st_size
    declared = voxels * max(int(itemsize), 1)
    if path.name.lower().endswith(".gz"):
        if declared > _MAX_GZIP_RATIO * size:
            raise InputError(f"{path.name}: its header declares {declared / 1e6:.1f} MB of voxels, more than "
                             f"{_MAX_GZIP_RATIO}x the {size / 1e3:.1f} kB compressed file can honestly hold; the "
                             "header is corrupt (or the file is a decompression bomb).")
    elif declared > size:
        raise InputError(f"{path.name}: its header declares {declared} bytes of voxels, but the file has {size}: it is "
                         "corrupt or truncated. Copy or download it again.")


def _corrupt(path: Path, err: Exception) -> InputError:
    return InputError(
        f"{path.name}: could not read it as NIfTI ({type(err).__name__}: {err}). The file is corrupt "
        "or truncated; copy or download it again."
    )


def _as_3d(array: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    if len(shape) > 3 and all(s == 1 for s in shape[3:]):
        return array.reshape(shape[:3])
    if len(shape) != 3:
        what = "2D" if len(shape) < 3 else f"{len(shape)}D"
        raise InputError(
            f"{name}: is a {what} image of shape {shape}; edgemed needs one 3D volume. "
            + (
                "Split the time series or channels into separate 3D files first."
                if len(shape) > 3
                else "Save the slice as a 3D volume of one slice (shape X, Y, 1)."
            )
        )
    return array


def write_nifti(volume: Volume, path: str | os.PathLike[str]) -> Path:
    """Write a volume as NIfTI in its canonical RAS voxel order, atomically.

    The file either appears complete or not at all (a crash leaves any old file in place). Label
    maps (modality "SEG") are stored as integers, everything else in the array's dtype.

    Args:
        volume: The volume; its `affine` becomes both the sform and the qform (code 1, scanner).
        path: Destination ending in `.nii` or `.nii.gz` (gzip-compressed).

    Returns:
        The path written.

    Raises:
        InputError: If the path does not end in `.nii` / `.nii.gz`, or the array's dtype cannot be
            stored in NIfTI.

    Example:
        >>> write_nifti(read_volume("scan_dicom/"), "out/scan.nii.gz")
    """
    target = Path(path)
    if not target.name.endswith(NIFTI_SUFFIXES):
        raise InputError(
            f"{target.name}: NIfTI files end in .nii or .nii.gz; rename the output, e.g. {target.stem}.nii.gz."
        )
    array = _storable(volume.array, target.name)
    image = nib.Nifti1Image(array, volume.affine)
    image.header.set_xyzt_units("mm", "sec")
    image.set_sform(volume.affine, code=1)
    image.set_qform(volume.affine, code=1)
    with atomic_file(target) as tmp, open(tmp, "wb") as raw:
        if target.name.endswith(".gz"):
            # mtime=0 keeps the bytes reproducible for the same volume (hashes in manifests).
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6, mtime=0) as stream:
                image.to_stream(stream)
        else:
            image.to_stream(raw)
    return target


def write_labels_like(mask_array: np.ndarray, like: Volume, path: str | os.PathLike[str]) -> Path:
    """Write an integer mask that lies on `like`'s grid as a NIfTI label map.

    Args:
        mask_array: Labels or a boolean mask, shape `like.shape` (canonical RAS order).
        like: The image the mask was computed on; its affine is written.
        path: Destination ending in `.nii` or `.nii.gz`.

    Returns:
        The path written.

    Raises:
        InputError: If the shape differs from `like.shape` or the values are not integers.
    """
    mask = np.asarray(mask_array)
    if mask.shape != like.shape:
        raise InputError(
            f"mask shape {mask.shape} differs from the image grid {like.shape} of {like.source or 'like'}; "
            "resample the mask onto the image first (resample_like(..., order='nearest'))."
        )
    if not (mask.dtype == np.bool_ or np.issubdtype(mask.dtype, np.integer)):
        raise InputError(f"mask has dtype {mask.dtype}; threshold or round it to integer labels before writing.")
    return write_nifti(Volume(mask, like.affine, "SEG", like.source), path)


def _storable(array: np.ndarray, name: str) -> np.ndarray:
    if array.dtype == np.bool_:
        return array.astype(np.uint8)
    if array.dtype in (np.int64, np.uint64):
        # nibabel refuses 64-bit integers without an explicit dtype; labels fit in 32 bits.
        info = np.iinfo(np.int32)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise InputError(f"{name}: values exceed the int32 range; NIfTI tools expect at most 32-bit integers.")
        return array.astype(np.int32)
    if array.dtype.kind not in "iuf":
        raise InputError(f"{name}: cannot store dtype {array.dtype} in NIfTI; convert to an integer or float array.")
    return array
