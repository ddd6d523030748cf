"""edgemed.export: students → ONNX bundles the runtime loads (imports no torch until a function runs).

Example:
    >>> from edgemed.export import OnnxExportConfig, to_onnx
    >>> bundle = to_onnx("runs/liver", "out/liver.edgemed", OnnxExportConfig(parity_volumes=("ct.nii.gz",)))
    >>> bundle.parity["mask_dice"]
    {'liver': 1.0}
"""

from __future__ import annotations

from edgemed.export._config import MIN_OPSET, OnnxExportConfig
from edgemed.export._onnx import INPUT_NAME, OUTPUT_NAME, to_onnx
from edgemed.runtime._bundle import OnnxBundle

__all__ = ["INPUT_NAME", "MIN_OPSET", "OUTPUT_NAME", "OnnxBundle", "OnnxExportConfig", "to_onnx"]
