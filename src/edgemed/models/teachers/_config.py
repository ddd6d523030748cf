"""How a torch or ONNX teacher wants its input: normalisation, spacing, 2D slices or 3D patches."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from edgemed.errors import ConfigError

__all__ = ["DEFAULT_WINDOW_HU", "TeacherInputConfig"]

DEFAULT_WINDOW_HU = (-1024.0, 1024.0)


@dataclass(frozen=True, slots=True, kw_only=True)
class TeacherInputConfig:
    """The preprocessing a torch/ONNX teacher was trained with, and how to tile a volume for it.

    Exactly one of `window_hu` and `zscore` applies; give neither for the default window
    (-1024, 1024) HU. ``zscore=(0.0, 1.0)`` feeds raw intensities.

    Attributes:
        dims: 2 runs the network on axial slices ``array[:, :, k]`` (batched, input (N, 1, X, Y));
            3 runs it on the volume, or on `patch_size` windows (input (N, 1, X, Y, Z)).
        window_hu: Clip to (lo, hi) HU and scale to [0, 1].
        zscore: (mean, std) in HU: ``(x - mean) / std``.
        spacing_mm: Resample to this voxel size (X, Y, Z) first, None keeping an axis as it is
            (``(0.8, 0.8, None)`` for a slice model); scores are resampled back (linear).
        patch_size: dims=3 only: sliding-window patch (X, Y, Z) in voxels; None = whole volume.
        overlap: Fraction of a patch shared with its neighbour, in [0, 1).
        blending: "gaussian" (weights favour patch centres, as nnU-Net) or "uniform".
        size_multiple: Pad slices/volumes (when no patch_size) up to a multiple of this, for
            networks that downsample (a 4-level UNet needs 16).
        class_ids: Label id of each output channel; None = 0..C-1.
        output_kind: What the network returns: "logits" or "probs" (it ends in a softmax).
        batch_size: Slices or patches per forward pass.
    """

    dims: Literal[2, 3] = 3
    window_hu: tuple[float, float] | None = None
    zscore: tuple[float, float] | None = None
    spacing_mm: tuple[float | None, float | None, float | None] | None = None
    patch_size: tuple[int, int, int] | None = None
    overlap: float = 0.5
    blending: Literal["gaussian", "uniform"] = "gaussian"
    size_multiple: int = 1
    class_ids: tuple[int, ...] | None = None
    output_kind: Literal["logits", "probs"] = "logits"
    batch_size: int = 4

    def __post_init__(self) -> None:
        if self.dims not in (2, 3):
            raise ConfigError(f"dims={self.dims!r}; use 2 (axial slices) or 3 (volumes/patches).")
        if self.window_hu is not None and self.zscore is not None:
            raise ConfigError("give window_hu or zscore, not both: a teacher was trained with one normalisation.")
        if self.window_hu is None and self.zscore is None:
            object.__setattr__(self, "window_hu", DEFAULT_WINDOW_HU)
        if self.window_hu is not None:
            lo, hi = _floats(self.window_hu, 2, "window_hu")
            if not lo < hi:
                raise ConfigError(
                    f"window_hu={self.window_hu}: the lower bound must be below the upper, e.g. (-1024, 1024)."
                )
            object.__setattr__(self, "window_hu", (lo, hi))
        if self.zscore is not None:
            mean, std = _floats(self.zscore, 2, "zscore")
            if not std > 0:
                raise ConfigError(f"zscore={self.zscore}: std must be positive, e.g. zscore=(40.0, 350.0).")
            object.__setattr__(self, "zscore", (mean, std))
        if self.spacing_mm is not None:
            object.__setattr__(self, "spacing_mm", _spacing(self.spacing_mm))
        if self.patch_size is not None:
            if self.dims == 2:
                raise ConfigError("patch_size is for dims=3 sliding windows; dims=2 runs whole axial slices.")
            patch = tuple(int(p) for p in self.patch_size)
            if len(patch) != 3 or min(patch) < 1:
                raise ConfigError(f"patch_size={self.patch_size}: give three positive voxel counts, e.g. (96, 96, 96).")
            object.__setattr__(self, "patch_size", patch)
        if not 0.0 <= self.overlap < 1.0:
            raise ConfigError(f"overlap={self.overlap}; use a fraction in [0, 1), e.g. 0.5.")
        if self.blending not in ("gaussian", "uniform"):
            raise ConfigError(f"blending={self.blending!r}; use 'gaussian' or 'uniform'.")
        if self.size_multiple < 1:
            raise ConfigError(f"size_multiple={self.size_multiple}; use 1 (no padding) or e.g. 16 for a 4-level UNet.")
        if self.class_ids is not None:
            ids = tuple(int(i) for i in self.class_ids)
            if not ids or len(set(ids)) != len(ids) or min(ids) < 0:
                raise ConfigError(
                    f"class_ids={self.class_ids}: give one distinct label id per output channel, 0 = background."
                )
            object.__setattr__(self, "class_ids", ids)
        if self.output_kind not in ("logits", "probs"):
            raise ConfigError(f"output_kind={self.output_kind!r}; use 'logits' or 'probs' (network ends in softmax).")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size}; use at least 1.")


def _floats(values: object, n: int, name: str) -> tuple[float, ...]:
    try:
        out = tuple(float(v) for v in values)  # type: ignore[attr-defined]
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{name}={values!r}: give {n} numbers.") from err
    if len(out) != n:
        raise ConfigError(f"{name}={values!r}: give exactly {n} numbers.")
    return out


def _spacing(values: object) -> tuple[float | None, ...]:
    try:
        out = tuple(None if v is None else float(v) for v in values)  # type: ignore[attr-defined]
    except (TypeError, ValueError) as err:
        raise ConfigError(f"spacing_mm={values!r}: give three voxel sizes in mm (None keeps an axis).") from err
    if len(out) != 3 or all(v is None for v in out) or any(v is not None and not v > 0 for v in out):
        raise ConfigError(
            f"spacing_mm={values!r}: give three positive voxel sizes in mm, None keeping an axis, "
            "e.g. (1.5, 1.5, None)."
        )
    return out
