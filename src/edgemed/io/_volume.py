"""The in-memory volume: a voxel array in canonical RAS order plus its affine."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from edgemed.errors import InputError

__all__ = ["Volume"]


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D image or label map on a voxel grid.

    edgemed keeps every volume in canonical RAS voxel order (as nibabel's `as_closest_canonical`):
    +i points to the patient's Right, +j Anterior, +k Superior, so axial slices are `array[:, :, k]`
    whatever the file's own orientation (DICOM's LPS included).

    Attributes:
        array: Voxel values, shape (X, Y, Z); Z is the axial (slice) axis, inferior → superior.
        affine: 4x4 voxel → world (RAS+, mm) matrix.
        modality: "CT", "MR" or "SEG" (label maps).
        source: A short, de-identified description of where it came from (a file name, never a
            patient identifier).
    """

    array: np.ndarray
    affine: np.ndarray
    modality: str = "CT"
    source: str = ""
    meta: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise InputError(f"{self.source or 'volume'}: expected a 3D array, got shape {self.array.shape}.")
        if self.affine.shape != (4, 4):
            raise InputError(f"{self.source or 'volume'}: affine must be 4x4, got {self.affine.shape}.")
        if min(self.array.shape) < 1:
            raise InputError(f"{self.source or 'volume'}: the volume is empty (shape {self.array.shape}).")

    @property
    def shape(self) -> tuple[int, int, int]:
        """Voxel grid size (X, Y, Z)."""
        return tuple(int(s) for s in self.array.shape)  # type: ignore[return-value]

    @property
    def spacing_mm(self) -> tuple[float, float, float]:
        """Voxel size along i, j, k in millimetres (column norms of the affine)."""
        return tuple(float(s) for s in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]

    def with_array(self, array: np.ndarray, *, modality: str | None = None) -> "Volume":
        """A volume on the same grid holding `array`."""
        return Volume(array, self.affine, modality or self.modality, self.source, dict(self.meta))

    def same_grid(self, other: "Volume", *, atol_mm: float = 1e-3) -> bool:
        """True when `other` has the same shape and affine (within `atol_mm`)."""
        return self.shape == other.shape and bool(np.allclose(self.affine, other.affine, atol=atol_mm))
