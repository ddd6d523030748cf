"""edgemed.export: students → ONNX bundles, ONNX bundles → TensorRT engines (imports no torch or tensorrt
until a function runs).

Example:
    >>> from edgemed.export import OnnxExportConfig, TrtBuildConfig, build_engine, to_onnx
    >>> bundle = to_onnx("runs/liver", "out/liver.edgemed", OnnxExportConfig(parity_volumes=("ct.nii.gz",)))
    >>> bundle.parity["mask_dice"]
    {'liver': 1.0}
    >>> engine = build_engine(bundle, "jetson-orin-nx-16gb", TrtBuildConfig(precision="fp16"), "out/liver.engine.d")
"""

from __future__ import annotations

from edgemed.export._config import MIN_OPSET, OnnxExportConfig
from edgemed.export._onnx import INPUT_NAME, OUTPUT_NAME, to_onnx
from edgemed.export._trt import (build_engine, check_engine_compatible, parse_layer_precisions, timing_cache_sha256,
                                 write_engine_bundle)
from edgemed.export._trt_config import (ShapeProfile, TrtBuildConfig, check_build_request, derive_shape_profiles,
                                        shape_profiles_json)
from edgemed.artifacts import EngineBundle, OnnxBundle

__all__ = [
    "INPUT_NAME",
    "MIN_OPSET",
    "OUTPUT_NAME",
    "EngineBundle",
    "OnnxBundle",
    "OnnxExportConfig",
    "ShapeProfile",
    "TrtBuildConfig",
    "build_engine",
    "check_engine_compatible",
    "check_build_request",
    "derive_shape_profiles",
    "parse_layer_precisions",
    "shape_profiles_json",
    "timing_cache_sha256",
    "to_onnx",
    "write_engine_bundle",
]
