"""Config of the ONNX export stage (a frozen dataclass that validates itself; no torch)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Union

from edgemed.errors import ConfigError
from edgemed.io import Volume

__all__ = ["MIN_OPSET", "OnnxExportConfig", "PRECISIONS"]

#: Weight precisions of an exported graph. FP16 halves the file and is what GPUs (TensorRT,
#: ONNX Runtime CUDA/DirectML) run fastest; inputs and outputs stay float32 either way.
PRECISIONS = ("fp32", "fp16")
#: Default parity tolerances per precision (FP16 rounds logits at ~1e-3 relative).
_TOLERANCE = {"fp32": (1e-3, 0.999), "fp16": (5e-2, 0.99)}

# Opset 17 brings LayerNormalization and is what TensorRT 8.6 (JetPack 5/6) and ORT ≥ 1.14 all read.
MIN_OPSET = 17
MAX_OPSET = 20  # the newest opset torch's TorchScript exporter writes

ParityVolume = Union[Volume, str, "os.PathLike[str]"]


@dataclass(frozen=True, slots=True, kw_only=True)
class OnnxExportConfig:
    """How a student becomes an ONNX bundle, and how closely the bundle must match it.

    Attributes:
        opset: ONNX opset of the default domain (17 to 20).
        dynamic_batch: Export the batch axis as a symbolic "batch" dimension; False fixes it at 1
            (some accelerators compile only static shapes). Height and width are always dynamic.
        simplify: Fold constants and fuse patterns with onnxslim after export.
        parity_volumes: Scans (Volumes, NIfTI files or DICOM folders) on which ONNX Runtime and
            the torch student are compared; None: a generated phantom. Pass the scans the model
            will see: parity on a phantom says little about a real CT's intensity range.
        parity_max_slices: At most this many evenly spaced axial slices per parity volume (bounds
            export time on large scans).
        precision: "fp32", or "fp16" (weights and arithmetic in half precision, inputs and
            outputs float32; numerically sensitive ops stay fp32, see `to_onnx`).
        max_abs_logit_diff: The largest |logit_onnx − logit_torch| accepted (default 1e-3 for
            fp32, 5e-2 for fp16).
        min_mask_dice: The lowest per-organ Dice between the ONNX and torch masks accepted
            (default 0.999 for fp32, 0.99 for fp16).
    """

    opset: int = MIN_OPSET
    dynamic_batch: bool = True
    simplify: bool = True
    parity_volumes: tuple[ParityVolume, ...] | None = None
    parity_max_slices: int = 64
    precision: str = "fp32"
    max_abs_logit_diff: float | None = None
    min_mask_dice: float | None = None

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"precision={self.precision!r}; export writes {' or '.join(PRECISIONS)} "
                              "(INT8 comes from `edgemed quantize` on the fp32 bundle).")
        logit, dice = _TOLERANCE[self.precision]
        if self.max_abs_logit_diff is None:
            object.__setattr__(self, "max_abs_logit_diff", logit)
        if self.min_mask_dice is None:
            object.__setattr__(self, "min_mask_dice", dice)
        if self.parity_volumes is not None:
            volumes = self.parity_volumes
            if isinstance(volumes, (str, os.PathLike, Volume)):
                volumes = (volumes,)  # one scan given bare: accept it as a 1-tuple
            object.__setattr__(self, "parity_volumes", tuple(volumes))
            if not self.parity_volumes:
                raise ConfigError("parity_volumes is empty; pass at least one scan, or None for a phantom.")
            for v in self.parity_volumes:
                if not isinstance(v, (Volume, str, os.PathLike)):
                    raise ConfigError(f"parity_volumes holds a {type(v).__name__}; pass Volumes or paths to scans.")
        if not MIN_OPSET <= self.opset <= MAX_OPSET:
            raise ConfigError(f"opset={self.opset}; edgemed exports opset {MIN_OPSET} to {MAX_OPSET} "
                              f"(use {MIN_OPSET} for TensorRT 8.6 / JetPack and older runtimes).")
        if self.parity_max_slices < 1:
            raise ConfigError(f"parity_max_slices={self.parity_max_slices} must be >= 1.")
        if not self.max_abs_logit_diff >= 0:
            raise ConfigError(f"max_abs_logit_diff={self.max_abs_logit_diff} must be >= 0, e.g. 1e-3 for fp32.")
        if not 0.0 <= self.min_mask_dice <= 1.0:
            raise ConfigError(f"min_mask_dice={self.min_mask_dice} must be in [0, 1], e.g. 0.999.")
