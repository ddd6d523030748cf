"""The two entry points: `read_volume` (scans) and `read_labels` (label maps), whatever the format."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
from pydicom.dataset import Dataset

from edgemed.errors import ConfigError, EdgemedError, InputError
from edgemed.io._deid import redact
from edgemed.io._dicom import SEG_SOP_CLASS, read_dicom_series, read_header, scan_folder
from edgemed.io._dicom_seg import read_dicom_seg
from edgemed.io._grid import check_same_grid
from edgemed.io._nifti import NIFTI_SUFFIXES, load_nifti
from edgemed.io._nrrd import NRRD_SUFFIXES, load_nrrd
from edgemed.io._orient import to_canonical
from edgemed.io._volume import Volume

__all__ = ["read_labels", "read_volume"]

_F = TypeVar("_F", bound=Callable[..., Volume])


def _input_boundary(fn: _F) -> _F:
    """Scan files come from outside: whatever a malformed file makes a parser raise reaches the
    caller as an InputError naming the file (the parser's error chained for debugging), never as
    a library traceback. Known failure modes get their own messages further in; this is the net."""

    @functools.wraps(fn)
    def guarded(path: str | os.PathLike[str], *args: object, **kwargs: object) -> Volume:
        try:
            return fn(path, *args, **kwargs)
        except EdgemedError:
            raise
        except (Exception, RecursionError, MemoryError) as err:  # noqa: BLE001 (see above)
            name = redact(Path(path).name)
            raise InputError(
                f"{name}: could not be read ({type(err).__name__}: {str(err)[:300]}). The file is corrupt, "
                "truncated or not the NIfTI, NRRD or DICOM it appears to be; export or copy it again."
            ) from err

    return guarded  # type: ignore[return-value]


_MODALITIES = ("CT", "MR")
# Air is about -1000 HU; MR intensities are (almost) never that negative.
_CT_GUESS_MIN = -500.0


@_input_boundary
def read_volume(path: str | os.PathLike[str], *, modality: str | None = None) -> Volume:
    """Read a CT or MR scan into canonical RAS order as float32.

    Accepts a NIfTI file (`.nii`, `.nii.gz`), an NRRD file (needs pynrrd), a folder holding one
    DICOM series (other files in it are ignored) or a single DICOM file. CT values come out in HU
    (RescaleSlope/Intercept or NIfTI scl_slope/scl_inter applied).

    Args:
        path: The file or DICOM series folder.
        modality: "CT" or "MR" to state the modality; None takes it from the DICOM Modality tag, or
            for NIfTI/NRRD (which do not record it) guesses "CT" when the darkest voxel is below
            -500 (air in HU) and "MR" otherwise, and sets meta["modality_guessed"] = True.

    Returns:
        The volume; `meta` holds only non-identifying facts (format, modality, scanner model, kVp,
        transfer syntax), never names, IDs, dates or UIDs.

    Raises:
        InputError: If the path is missing, empty, corrupt, not 3D, not a supported format, or a
            DICOM folder with no, several or incomplete series.
        ConfigError: If `modality` is not "CT", "MR" or None.

    Example:
        >>> ct = read_volume("data/dcmqi_ct3slice/ct")
        >>> ct.shape, ct.modality
        ((512, 512, 3), 'CT')
    """
    if modality is not None and modality not in _MODALITIES:
        raise ConfigError(f"modality={modality!r} is not supported; pass 'CT', 'MR' or None (read it from the file).")
    source = Path(path)
    kind = _kind(source)
    if kind == "dicom-folder":
        volume = read_dicom_series(scan_folder(source), source=source.name)
    elif kind == "dicom-file":
        header = read_header(source)
        assert header is not None  # _kind saw the DICM preamble
        volume = read_dicom_series([(source, header)], source=source.name)
    else:
        array, affine = load_nifti(source, as_labels=False) if kind == "nifti" else load_nrrd(source)
        array, affine = to_canonical(array.astype(np.float32, copy=False), affine, source=source.name)
        # fmin skips NaN: a CT with a few NaN voxels is still guessed CT (and then refused for the NaNs).
        darkest = float(np.fmin.reduce(array, axis=None)) if array.size else 0.0
        guessed = "CT" if darkest < _CT_GUESS_MIN else "MR"
        meta: dict[str, object] = {"format": kind.upper(), "modality": guessed}
        if modality is None:
            meta["modality_guessed"] = True
        volume = Volume(array, affine, guessed, source.name, meta)
    if modality is not None and modality != volume.modality:
        # The caller's word wins over the file's tag or our guess; both stay visible in meta.
        meta = {**volume.meta, "modality": modality, "modality_from_file": volume.modality}
        meta.pop("modality_guessed", None)
        volume = Volume(volume.array, volume.affine, modality, volume.source, meta)
    return volume


@_input_boundary
def read_labels(path: str | os.PathLike[str], *, like: Volume | None = None) -> Volume:
    """Read a label map (integer organ ids) into canonical RAS order, modality "SEG".

    Accepts NIfTI, NRRD (needs pynrrd) and DICOM-SEG (a `.dcm` file of Segmentation Storage, or a
    folder holding exactly one). DICOM-SEG frames are painted onto `like`'s grid, segment numbers
    become label values and `meta["segments"]` maps each number to its label ({1: "Liver"}).

    Args:
        path: The label file (or a folder holding one DICOM-SEG).
        like: The image the labels belong to. Required for DICOM-SEG; for other formats, when
            given, the labels are checked to lie on its grid (`check_same_grid`).

    Returns:
        The label map, an unsigned integer array (uint8 when labels fit).

    Raises:
        InputError: If the file is missing, corrupt or not 3D, holds non-integer or negative
            values, is a DICOM-SEG without `like`, or is not on `like`'s grid.

    Example:
        >>> ct = read_volume("data/dcmqi_ct3slice/ct")
        >>> liver = read_labels("data/dcmqi_ct3slice/seg/liver.dcm", like=ct)
        >>> liver.meta["segments"]
        {1: 'Liver'}
    """
    source = Path(path)
    kind = _kind(source)
    if kind in ("dicom-file", "dicom-folder"):
        seg_path, header = _find_seg(source, kind)
        return read_dicom_seg(seg_path, header, like)
    array, affine = load_nifti(source, as_labels=True) if kind == "nifti" else load_nrrd(source)
    array, affine = to_canonical(_as_label_array(array, source.name), affine, source=source.name)
    labels = Volume(array, affine, "SEG", source.name, {"format": kind.upper()})
    if like is not None:
        check_same_grid(like, labels)
    return labels


def _kind(path: Path) -> str:
    """"nifti", "nrrd", "dicom-file" or "dicom-folder", after checking the path is usable."""
    if not path.exists():
        raise InputError(f"{path}: does not exist. Check the path (relative paths start at {Path.cwd()}).")
    if path.is_dir():
        return "dicom-folder"
    if path.stat().st_size == 0:
        raise InputError(f"{path.name}: is empty (0 bytes); the copy or download failed. Fetch the file again.")
    name = path.name.lower()
    if name.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if name.endswith(NRRD_SUFFIXES):
        return "nrrd"
    try:
        with open(path, "rb") as stream:
            head = stream.read(132)
    except OSError as err:
        raise InputError(f"{path.name}: cannot be read ({err.strerror}); check its permissions.") from err
    if head[128:132] == b"DICM":
        return "dicom-file"
    raise InputError(
        f"{path.name}: is neither NIfTI, NRRD nor DICOM. Pass a .nii/.nii.gz/.nrrd file, a DICOM file, "
        "or a folder holding one DICOM series."
    )


def _find_seg(path: Path, kind: str) -> tuple[Path, Dataset]:
    if kind == "dicom-folder":
        segs = [(p, ds) for p, ds in scan_folder(path) if ds.get("SOPClassUID", "") == SEG_SOP_CLASS]
        if len(segs) != 1:
            found = ", ".join(p.name for p, _ in segs[:5]) or "none"
            raise InputError(
                f"{path.name}: read_labels needs a folder with exactly one DICOM-SEG (found {len(segs)}: "
                f"{found}). Pass the SEG file itself; image series are read with read_volume."
            )
        return segs[0]
    header = read_header(path)
    assert header is not None  # _kind saw the DICM preamble
    if header.get("SOPClassUID", "") != SEG_SOP_CLASS:
        raise InputError(
            f"{path.name}: is a DICOM {header.get('Modality', '')} image, not a DICOM-SEG; read images with "
            "read_volume, and pass a label map (NIfTI, NRRD, DICOM-SEG) to read_labels."
        )
    return path, header


def _as_label_array(array: np.ndarray, name: str) -> np.ndarray:
    """Integer labels in the smallest unsigned dtype that holds them."""
    if array.dtype.kind == "f":
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise InputError(
                f"{name}: holds non-integer values, so it is a probability map or an image, not a label map. "
                "Threshold it to integer labels first, or read it with read_volume."
            )
    elif array.dtype.kind not in "iub":
        raise InputError(f"{name}: has dtype {array.dtype}; a label map needs integer voxels.")
    low, high = (float(array.min()), float(array.max())) if array.size else (0.0, 0.0)
    if low < 0:
        raise InputError(
            f"{name}: holds negative labels (down to {low:g}); label maps use 0 for background and positive ids."
        )
    dtype = np.uint8 if high < 2**8 else np.uint16 if high < 2**16 else np.uint32
    return np.ascontiguousarray(array, dtype=dtype)
