"""Typed specs carried inside artifacts: preprocessing, postprocessing, organ channels, tensors (numpy only)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Union

import numpy as np

from edgemed.errors import ArtifactError, ConfigError

__all__ = ["Dim", "OrganChannel", "PostprocessSpec", "PreprocessSpec", "SpecsFromMeta", "TensorSpec"]


@dataclass(frozen=True)
class PreprocessSpec:
    """How a volume becomes student input; the runtime applies exactly this.

    Attributes:
        modality: "CT" (window in HU) or "MR" (percentile normalisation).
        spacing_mm: In-plane (x, y) spacing the student works at; slices keep their own thickness.
        window_hu: CT intensity window (low, high) scaled to [0, 1].
        context_slices: Neighbouring axial slices on each side fed as channels (2.5D); 0 = pure 2D.
        context_spacing_mm: Distance between those neighbours in mm, interpolated along z, so a
            1 mm and a 5 mm scan give the student the same anatomy per channel. None: adjacent
            slices, whatever their thickness.
        pad_multiple: Height and width are padded to a multiple of this (the network's stride).
        body_crop: Crop each scan in-plane to the patient's body (plus `body_margin_mm`) before
            resampling: the table, the air around the patient and arms held apart from the trunk
            are cut away, so scanners with a wide or a tight field of view look alike to the
            student. The runtime crops identically and returns masks on the full grid.
        body_margin_mm: Air kept around the body when cropping.
    """

    modality: str = "CT"
    spacing_mm: tuple[float, float] = (3.0, 3.0)
    window_hu: tuple[float, float] = (-300.0, 400.0)
    context_slices: int = 4
    context_spacing_mm: float | None = 6.0
    pad_multiple: int = 16
    body_crop: bool = True
    body_margin_mm: float = 10.0

    def __post_init__(self) -> None:
        # Recipes and JSON give lists; keep tuples so specs compare and hash by value.
        object.__setattr__(self, "spacing_mm", tuple(float(v) for v in self.spacing_mm))
        object.__setattr__(self, "window_hu", tuple(float(v) for v in self.window_hu))
        if self.modality not in ("CT", "MR"):
            raise ConfigError(f"modality={self.modality!r}; use 'CT' or 'MR'.")
        if len(self.spacing_mm) != 2 or min(self.spacing_mm) <= 0:
            raise ConfigError(f"spacing_mm={self.spacing_mm} must be two positive in-plane spacings, e.g. (2.0, 2.0).")
        lo, hi = self.window_hu
        if not hi > lo:
            raise ConfigError(f"window_hu={self.window_hu} must be (low, high) with high > low, e.g. (-300, 400).")
        if not 0 <= self.context_slices <= 4:
            raise ConfigError(f"context_slices={self.context_slices}; use 0 (2D) to 4.")
        if self.context_spacing_mm is not None and self.context_spacing_mm <= 0:
            raise ConfigError(f"context_spacing_mm={self.context_spacing_mm} must be > 0, or None for adjacent slices.")
        if self.pad_multiple < 1:
            raise ConfigError(f"pad_multiple={self.pad_multiple} must be >= 1.")
        if self.body_margin_mm < 0:
            raise ConfigError(f"body_margin_mm={self.body_margin_mm} must be >= 0, e.g. 10.")

    @property
    def in_channels(self) -> int:
        """Input channels of a student using this spec."""
        return 2 * self.context_slices + 1

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"modality": self.modality, "spacing_mm": list(self.spacing_mm), "window_hu": list(self.window_hu),
                "context_slices": self.context_slices, "context_spacing_mm": self.context_spacing_mm,
                "pad_multiple": self.pad_multiple, "body_crop": self.body_crop,
                "body_margin_mm": self.body_margin_mm}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "PreprocessSpec":
        """Inverse of `to_json`."""
        return cls(modality=raw["modality"], spacing_mm=tuple(raw["spacing_mm"]),  # type: ignore[arg-type]
                   window_hu=tuple(raw["window_hu"]), context_slices=int(raw["context_slices"]),  # type: ignore[arg-type]
                   context_spacing_mm=raw.get("context_spacing_mm"), pad_multiple=int(raw["pad_multiple"]),
                   # Artifacts written before body cropping existed saw whole slices.
                   body_crop=bool(raw.get("body_crop", False)),
                   body_margin_mm=float(raw.get("body_margin_mm", 10.0)))


@dataclass(frozen=True)
class PostprocessSpec:
    """How student logits become a mask.

    Attributes:
        largest_component: Keep only the largest 3D connected component of each organ.
    """

    largest_component: bool = False

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"argmax": True, "largest_component": self.largest_component}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "PostprocessSpec":
        """Inverse of `to_json`."""
        return cls(largest_component=bool(raw.get("largest_component", False)))


@dataclass(frozen=True)
class OrganChannel:
    """Output channel `channel` (≥ 1) of a student is organ `name`, id `label_id` in the teacher's map."""

    channel: int
    label_id: int
    name: str

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"channel": self.channel, "label_id": self.label_id, "name": self.name}


# A dimension is a fixed size or a symbolic name ("batch", "height"); "?" when a backend gives no name.
Dim = Union[int, str]


@dataclass(frozen=True)
class TensorSpec:
    """Name, element type and shape of a model input or output.

    Attributes:
        name: The graph's tensor name, e.g. "image".
        dtype: A numpy dtype name, e.g. "float32".
        shape: Fixed sizes (int) and symbolic dimensions (str), e.g. ("batch", 3, "height", "width").
    """

    name: str
    dtype: str
    shape: tuple[Dim, ...]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "TensorSpec":
        """Inverse of `to_json`.

        Raises:
            ArtifactError: A field is missing or malformed.
        """
        try:
            shape = tuple(d if isinstance(d, str) else int(d) for d in raw["shape"])
            return cls(name=str(raw["name"]), dtype=str(np.dtype(raw["dtype"])), shape=shape)
        except (KeyError, TypeError, ValueError) as err:
            raise ArtifactError(f"tensor spec {dict(raw)!r} is malformed ({err}); re-export the bundle.") from err


class SpecsFromMeta:
    """What every deployable artifact (student, bundle, engine) answers from its typed `meta`."""

    meta: Any

    @property
    def preprocess(self) -> PreprocessSpec:
        """The preprocessing the student was trained with; the runtime applies exactly this."""
        return self.meta.preprocess  # type: ignore[no-any-return]

    @property
    def postprocess(self) -> PostprocessSpec:
        """How probabilities become a mask (argmax; optional largest connected component)."""
        return self.meta.postprocess  # type: ignore[no-any-return]

    @property
    def organs(self) -> tuple[OrganChannel, ...]:
        """Output channels 1.. and the organs (label ids in the teacher's map) they segment."""
        return self.meta.organs  # type: ignore[no-any-return]
