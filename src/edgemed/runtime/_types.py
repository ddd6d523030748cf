"""What every backend shares: tensor specs, the `Session` Protocol, feed checking (numpy only)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from edgemed.artifacts import TensorSpec
from edgemed.errors import InputError

__all__ = ["Session", "StageTimings", "TensorSpec", "check_feed"]


@dataclass(frozen=True)
class StageTimings:
    """Wall-clock time of one `Segmenter` call, per stage (for profiling).

    Attributes:
        preprocess_ms: Windowing, in-plane resampling, padding and 2.5D context stacking.
        inference_ms: Time inside the backend's `run`, all batches together.
        postprocess_ms: Softmax, resampling back to the volume grid, argmax, label ids, cleanup.
        total_ms: The whole call.
        slices: Axial slices run through the model.
        batches: Backend calls made.
        qc_ms: Quality control's share of total_ms (input checks, confidence statistics, output
            checks); 0 when QC was off.
    """

    preprocess_ms: float
    inference_ms: float
    postprocess_ms: float
    total_ms: float
    slices: int
    batches: int
    qc_ms: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (rounded to µs)."""
        return {"preprocess_ms": round(self.preprocess_ms, 3), "inference_ms": round(self.inference_ms, 3),
                "postprocess_ms": round(self.postprocess_ms, 3), "total_ms": round(self.total_ms, 3),
                "slices": self.slices, "batches": self.batches, "qc_ms": round(self.qc_ms, 3)}


@runtime_checkable
class Session(Protocol):
    """One loaded model on one backend. `run` may be called from several threads at once."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on `feed` (input name → array); returns output name → array (owned by the caller)."""
        ...

    def close(self) -> None:
        """Release the backend's resources; the session cannot run afterwards."""
        ...

    def __enter__(self) -> "Session": ...

    def __exit__(self, *exc: object) -> None: ...


def check_feed(inputs: tuple[TensorSpec, ...], feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Check a feed against the model's inputs before it reaches a backend.

    Returns:
        The feed as C-contiguous arrays of the declared dtypes.

    Raises:
        InputError: Missing or unknown names, wrong dtype kind, wrong rank or a fixed size that differs.
    """
    names = {spec.name for spec in inputs}
    unknown = sorted(set(feed) - names)
    missing = sorted(names - set(feed))
    if unknown or missing:
        raise InputError(f"the feed has inputs {sorted(feed)}; the model takes {sorted(names)} "
                         f"(unknown: {unknown or 'none'}, missing: {missing or 'none'}).")
    out: dict[str, np.ndarray] = {}
    for spec in inputs:
        value = feed[spec.name]
        if not isinstance(value, np.ndarray):
            raise InputError(f"input {spec.name!r} must be a numpy array, got {type(value).__name__}.")
        if value.ndim != len(spec.shape):
            raise InputError(f"input {spec.name!r} must have {len(spec.shape)} dimensions {spec.shape}, "
                             f"got shape {value.shape}.")
        for axis, (want, got) in enumerate(zip(spec.shape, value.shape)):
            if isinstance(want, int) and want != got:
                raise InputError(f"input {spec.name!r} needs size {want} on axis {axis} (shape {spec.shape}), "
                                 f"got shape {value.shape}.")
        if value.dtype.kind not in "fiub":
            raise InputError(f"input {spec.name!r} must be numeric ({spec.dtype}), got dtype {value.dtype}.")
        out[spec.name] = np.ascontiguousarray(value, dtype=spec.dtype)
    return out
