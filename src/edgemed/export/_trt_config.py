"""TensorRT build config, shape profiles and pre-build checks: pure Python, no TensorRT needed.

Everything here runs on any machine (`edgemed build --print-config` uses it), so a wrong
target, precision or DLA core fails before anyone reaches the GPU.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

from edgemed.errors import ArtifactError, ConfigError
from edgemed.profiles import Accelerator, Precision, TargetProfile
from edgemed.artifacts import OnnxBundle
from edgemed.runtime.backends.trt import version_tuple

__all__ = ["BATCH_RANGE", "FOV_MM", "ShapeProfile", "TrtBuildConfig", "check_build_request", "count_quantize_nodes",
           "derive_shape_profiles"]

#: In-plane field of view, in mm, that the derived height/width range covers at the student's
#: spacing: 200 mm is a child's trunk or a tight body crop (the minimum); 350 mm a typical adult
#: abdomen after body cropping (the optimum TensorRT tunes its kernels for); 500 mm the standard
#: maximum CT reconstruction field of view, i.e. an uncropped slice (the maximum).
FOV_MM = (200.0, 350.0, 500.0)
#: Slices per call (min, opt, max): the runtime's Segmenter sends batches of 16 by default (and
#: a last, smaller one); 8 is the tuning point. Fixed-batch models keep their batch.
BATCH_RANGE = (1, 8, 16)
_BUILD_PRECISIONS = (Precision.FP32, Precision.FP16, Precision.INT8)
_HARDWARE_LEVELS = ("none", "ampere_plus")
_FALLBACKS = ("none", "fp32")

Range = tuple[int, int, int]
PathLike = Union[str, "os.PathLike[str]"]


def _range(name: str, value: Any) -> Range | None:
    if value is None:
        return None
    try:
        lo, opt, hi = (int(v) for v in value)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{name}={value!r} must be three integers (min, opt, max), e.g. (1, 8, 16).") from err
    if not 1 <= lo <= opt <= hi:
        raise ConfigError(f"{name}={value!r} must satisfy 1 <= min <= opt <= max.")
    return lo, opt, hi


@dataclass(frozen=True, slots=True, kw_only=True)
class TrtBuildConfig:
    """How an ONNX bundle becomes a TensorRT engine.

    Attributes:
        precision: FP32 (IEEE: TF32 tensor-core math is switched off, so the engine matches ONNX
            Runtime), FP16 (TensorRT may keep layers in FP32 where faster or needed), or INT8,
            only from a QDQ ONNX bundle (explicit quantization: run `edgemed quantize` first).
        workspace_mib: Scratch memory TensorRT may use per layer, MiB (Jetsons share it with the CPU).
        batch: (min, opt, max) slices per call; None: `BATCH_RANGE` (a fixed-batch model: its batch).
        size_px: (min, opt, max) height and width in pixels, multiples of the bundle's
            pad_multiple; None: derived from `FOV_MM` at the student's spacing.
        dla_core: Build for this DLA core (Jetson Orin/Xavier); None: the GPU. DLA runs FP16 or
            INT8 and fixed shapes only (min = opt = max; the runtime pads smaller inputs).
        gpu_fallback: With `dla_core`: layers DLA cannot run go to the GPU (else the build fails).
        hardware_compatibility: "none", or "ampere_plus": one engine for every Ampere-or-newer
            data-center/desktop GPU (TensorRT >= 8.6; not on JetPack; may be slower).
        version_compatible: The engine also runs on later TensorRT versions (>= 8.6; may be slower).
        timing_cache: A TensorRT timing cache file: read when present (faster rebuilds), written
            back after the build, and copied into the engine bundle; None: no cache kept.
        fallback: "none", or "fp32": if the GPU lacks fast FP16/INT8 or the build fails in it,
            build FP32 instead and record that in the manifest. Never done unasked.
    """

    precision: Precision = Precision.FP16
    workspace_mib: int = 1024
    batch: Range | None = None
    size_px: Range | None = None
    dla_core: int | None = None
    gpu_fallback: bool = True
    hardware_compatibility: str = "none"
    version_compatible: bool = False
    timing_cache: PathLike | None = None
    fallback: str = "none"

    def __post_init__(self) -> None:
        try:
            precision = Precision(self.precision)
        except ValueError as err:
            raise ConfigError(f"precision={self.precision!r}; build fp32, fp16 or int8.") from err
        if precision not in _BUILD_PRECISIONS:
            raise ConfigError(f"precision={precision.value!r}; build fp32, fp16 or int8 (TF32 is TensorRT's "
                              "default math for fp32 layers on Ampere+; ask for fp16 for speed).")
        object.__setattr__(self, "precision", precision)
        object.__setattr__(self, "batch", _range("batch", self.batch))
        object.__setattr__(self, "size_px", _range("size_px", self.size_px))
        if isinstance(self.workspace_mib, bool) or not isinstance(self.workspace_mib, int) or self.workspace_mib < 16:
            raise ConfigError(f"workspace_mib={self.workspace_mib!r} must be an integer >= 16, e.g. 1024.")
        if self.dla_core is not None:
            if isinstance(self.dla_core, bool) or not isinstance(self.dla_core, int) or self.dla_core < 0:
                raise ConfigError(f"dla_core={self.dla_core!r} must be a DLA core index (0 or 1), or None for the GPU.")
            if precision is Precision.FP32:
                raise ConfigError("DLA runs fp16 or int8 only; build with precision fp16 (or int8), or drop dla_core.")
        if self.hardware_compatibility not in _HARDWARE_LEVELS:
            raise ConfigError(f"hardware_compatibility={self.hardware_compatibility!r}; use 'none' or 'ampere_plus'.")
        if self.hardware_compatibility != "none" and self.dla_core is not None:
            raise ConfigError("hardware_compatibility is for GPUs; a DLA engine is tied to its device. Drop one.")
        if self.fallback not in _FALLBACKS:
            raise ConfigError(f"fallback={self.fallback!r}; use 'none' or 'fp32'.")
        if self.fallback == "fp32" and precision is Precision.FP32:
            raise ConfigError("fallback='fp32' only applies to fp16 or int8 builds; drop it for an fp32 build.")
        if self.timing_cache is not None:
            object.__setattr__(self, "timing_cache", Path(self.timing_cache))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the field names of the CLI flags)."""
        return {"precision": self.precision.value, "workspace_mib": self.workspace_mib,
                "batch": list(self.batch) if self.batch else None,
                "size_px": list(self.size_px) if self.size_px else None, "dla_core": self.dla_core,
                "gpu_fallback": self.gpu_fallback, "hardware_compatibility": self.hardware_compatibility,
                "version_compatible": self.version_compatible,
                "timing_cache": str(self.timing_cache) if self.timing_cache else None, "fallback": self.fallback}


@dataclass(frozen=True)
class ShapeProfile:
    """The shapes one engine input accepts: TensorRT tunes for `opt` and runs anything in [min, max]."""

    name: str
    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_json(self) -> dict[str, list[int]]:
        """A JSON-ready dict."""
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


def _px(fov_mm: float, spacing_mm: float, multiple: int, rounding: Any) -> int:
    return multiple * max(1, int(rounding(fov_mm / spacing_mm / multiple)))


def derive_shape_profiles(bundle: OnnxBundle, config: TrtBuildConfig) -> dict[str, ShapeProfile]:
    """The optimization profile of the bundle's input, from its shape and preprocessing.

    Height and width are multiples of `preprocess.pad_multiple` (the runtime pads every slice to
    one): the minimum covers `FOV_MM[0]` at the coarser in-plane spacing (rounded down), the
    maximum `FOV_MM[2]` at the finer one (rounded up), the optimum `FOV_MM[1]` at the mean
    spacing. Batch: `BATCH_RANGE`, or the model's fixed batch. E.g. at 1.5 mm with
    pad_multiple 16: 128 / 240 / 336 px. `config.batch` and `config.size_px` override them;
    a DLA build gets the fixed shape (opt batch, C, max, max).

    Raises:
        ArtifactError: The input is not (batch, channels, height, width) with fixed channels.
        ConfigError: An override that a fixed dimension or the pad multiple contradicts.
    """
    spec = bundle.inputs[0]
    if len(spec.shape) != 4 or not isinstance(spec.shape[1], int):
        raise ArtifactError(f"{bundle.path}: input {spec.name!r} has shape {spec.shape}; a slice model takes "
                            "(batch, channels, height, width). Re-export the bundle with edgemed export.")
    batch_dim, channels, h_dim, w_dim = spec.shape
    pre = bundle.preprocess
    multiple = pre.pad_multiple
    if isinstance(batch_dim, int):
        if config.batch is not None and config.batch != (batch_dim,) * 3:
            raise ConfigError(f"the model has a fixed batch of {batch_dim}; batch={config.batch} cannot change it "
                              "(re-export without --fixed-batch for a dynamic batch).")
        batch: Range = (batch_dim,) * 3  # type: ignore[assignment]
    else:
        batch = config.batch or BATCH_RANGE
    if config.size_px is not None:
        odd = [v for v in config.size_px if v % multiple]
        if odd:
            raise ConfigError(f"size_px={config.size_px}: {odd} not a multiple of the bundle's pad_multiple "
                              f"{multiple}; the runtime only feeds multiples of it.")
        size: Range = config.size_px
    else:
        fine, coarse = min(pre.spacing_mm), max(pre.spacing_mm)
        mean = sum(pre.spacing_mm) / 2
        lo = _px(FOV_MM[0], coarse, multiple, math.floor)
        hi = max(lo, _px(FOV_MM[2], fine, multiple, math.ceil))
        size = (lo, min(hi, max(lo, _px(FOV_MM[1], mean, multiple, math.ceil))), hi)
    # A fixed spatial size (edgemed export never writes one, but honour it) stays fixed.
    (h0, h1, h2), (w0, w1, w2) = ((d, d, d) if isinstance(d, int) else size for d in (h_dim, w_dim))
    if config.dla_core is not None:  # DLA has no dynamic dimensions: one shape, the largest
        fixed = (batch[1], channels, h2, w2)
        return {spec.name: ShapeProfile(spec.name, fixed, fixed, fixed)}
    return {spec.name: ShapeProfile(spec.name, (batch[0], channels, h0, w0), (batch[1], channels, h1, w1),
                                    (batch[2], channels, h2, w2))}


def count_quantize_nodes(model_path: PathLike) -> int:
    """QuantizeLinear nodes in an ONNX file (onnx when installed, else a scan of the protobuf's bytes).

    The byte scan is exact in practice: op types are stored as plain strings, and
    "DequantizeLinear" does not contain "QuantizeLinear" (case differs).
    """
    try:
        import onnx
    except ImportError:
        return Path(model_path).read_bytes().count(b"QuantizeLinear")
    model = onnx.load(str(model_path), load_external_data=False)
    return sum(node.op_type == "QuantizeLinear" for node in model.graph.node)


def check_build_request(bundle: OnnxBundle, target: TargetProfile, config: TrtBuildConfig) -> None:
    """Refuse, before any GPU work, a build the target or the bundle cannot support.

    Raises:
        ConfigError: A CPU target, a precision the target lacks, a DLA core it lacks,
            compatibility modes it cannot have, or INT8 from an ONNX without Q/DQ nodes.
    """
    if bundle.format != "onnx":
        raise ConfigError(f"{bundle.path} holds a {bundle.format!r} model; TensorRT builds from an ONNX bundle "
                          "(edgemed export).")
    if target.accelerator is not Accelerator.GPU or target.compute_capability is None:
        raise ConfigError(f"target {target.id} is a CPU; TensorRT builds for NVIDIA GPUs. For CPUs deploy the ONNX "
                          "bundle (backend 'openvino' or 'ort').")
    precision = config.precision
    if precision not in target.precisions:
        raise ConfigError(f"target {target.id} does not run {precision.value} (it runs "
                          f"{', '.join(sorted(p.value for p in target.precisions))}); choose one of those.")
    if config.dla_core is not None and config.dla_core >= target.dla_cores:
        has = f"has {target.dla_cores} DLA core(s) (indices 0..{target.dla_cores - 1})" if target.dla_cores else \
            "has no DLA"
        raise ConfigError(f"dla_core={config.dla_core}, but target {target.id} {has}. Drop --dla-core to build for "
                          "its GPU.")
    trt_version = version_tuple(target.tensorrt or "")
    if (config.version_compatible or config.hardware_compatibility != "none") and trt_version \
            and trt_version < (8, 6)[:len(trt_version)]:
        raise ConfigError(f"target {target.id} ships TensorRT {target.tensorrt}; version and hardware compatibility "
                          "need TensorRT >= 8.6. Build without them, on the target itself.")
    if config.hardware_compatibility != "none":
        if target.jetpack is not None:
            raise ConfigError(f"target {target.id} is a Jetson: TensorRT on JetPack has no hardware compatibility "
                              "mode. Build on the Jetson itself without --hardware-compatible.")
        if tuple(target.compute_capability) < (8, 0):
            raise ConfigError(f"hardware_compatibility='ampere_plus' needs an Ampere-or-newer target (compute "
                              f"capability >= 8.0); {target.id} is {target.compute_capability[0]}."
                              f"{target.compute_capability[1]}.")
    if precision is Precision.INT8:
        if count_quantize_nodes(bundle.model_path) == 0:
            raise ConfigError(f"{bundle.path} has no QuantizeLinear nodes: TensorRT builds INT8 only from a QDQ "
                              f"(explicitly quantized) ONNX. Quantize it first: edgemed quantize {bundle.path} "
                              "--scans CT.nii.gz --out BUNDLE-int8, then build that bundle if it kept INT8.")


def shape_profiles_json(profiles: Mapping[str, ShapeProfile]) -> dict[str, dict[str, list[int]]]:
    """Input name → {"min", "opt", "max"} lists, as stored in the engine manifest."""
    return {name: p.to_json() for name, p in profiles.items()}
