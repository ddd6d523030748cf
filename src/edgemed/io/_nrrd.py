"""NRRD reading through pynrrd (an optional, dev-only dependency imported on first use)."""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

from edgemed._deps import require
from edgemed.errors import InputError

__all__ = ["NRRD_SUFFIXES", "load_nrrd"]

NRRD_SUFFIXES = (".nrrd", ".nhdr")
# Sign flips from each NRRD world space to RAS.
_SPACE_TO_RAS = {
    "right-anterior-superior": (1.0, 1.0, 1.0),
    "ras": (1.0, 1.0, 1.0),
    "left-anterior-superior": (-1.0, 1.0, 1.0),
    "las": (-1.0, 1.0, 1.0),
    "left-posterior-superior": (-1.0, -1.0, 1.0),
    "lps": (-1.0, -1.0, 1.0),
}


def load_nrrd(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Read an NRRD file's voxels (stored dtype) and its voxel → RAS affine, in file voxel order.

    Raises:
        MissingDependencyError: If pynrrd is not installed.
        InputError: If the file is corrupt, not 3D, or lacks a patient space (space directions and
            origin).
    """
    nrrd = require("nrrd")  # a base dependency; missing only in a hand-made environment: "pip install pynrrd"
    try:
        data, header = nrrd.read(os.fspath(path))
    except (nrrd.NRRDError, OSError, EOFError, ValueError, zlib.error) as err:
        raise InputError(
            f"{path.name}: could not read it as NRRD ({type(err).__name__}: {err}); the file is corrupt or "
            "truncated. Copy it again."
        ) from err
    space = str(header.get("space", "")).lower()
    directions = header.get("space directions")
    origin = header.get("space origin")
    if space not in _SPACE_TO_RAS or directions is None or origin is None:
        raise InputError(
            f"{path.name}: has no usable patient space (space={space or 'none'}, space directions and space "
            "origin are needed) so it cannot be placed on an image. Save it from a tool that writes the "
            "geometry (3D Slicer, SimpleITK), or convert it to NIfTI."
        )
    directions = np.asarray(directions, dtype=np.float64)
    kept = [i for i, row in enumerate(directions) if np.all(np.isfinite(row))]
    if data.ndim != 3 or len(kept) != 3:
        squeezable = data.ndim == 4 and len(kept) == 3 and data.shape[[i for i in range(4) if i not in kept][0]] == 1
        if not squeezable:
            raise InputError(f"{path.name}: is {data.ndim}D with shape {data.shape}; edgemed needs one 3D volume.")
        data = data.reshape([data.shape[i] for i in kept])
    affine = np.eye(4)
    affine[:3, :3] = directions[kept].T  # NRRD rows are per-axis vectors; affine columns are
    affine[:3, 3] = np.asarray(origin, dtype=np.float64)
    return data, np.diag([*_SPACE_TO_RAS[space], 1.0]) @ affine
