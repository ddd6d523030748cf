"""ONNX bundle → TensorRT engine bundle, built on the GPU that will run it (tensorrt imported lazily).

The engine bundle holds the raw serialized plan (`model.engine`, trtexec-loadable, no header),
optionally the timing cache, and a manifest recording what was asked and what was built, with a
copy of the ONNX bundle's runtime metadata so `edgemed.runtime.load` segments with it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from edgemed._atomic import atomic_file
from edgemed.artifacts import (ENGINE_FILE, ENGINE_KIND, ENGINE_SCHEMA, EngineBundle, EngineMeta, OnnxBundle,
                               write_artifact)
from edgemed.errors import ArtifactError, BackendError, CompatibilityError, EdgemedWarning
from edgemed.export._trt_config import (ShapeProfile, TrtBuildConfig, check_build_request, derive_shape_profiles,
                                        shape_profiles_json)
from edgemed.profiles import Precision, TargetProfile
from edgemed.runtime.backends.trt import (check_engine_compatible, import_cudart, import_tensorrt, local_gpu_facts,
                                          trt_logger, version_tuple)

__all__ = ["TIMING_CACHE_FILE", "build_engine", "check_build_host", "check_engine_compatible", "engine_metadata",
           "parse_layer_precisions", "precision_counts", "timing_cache_sha256", "write_engine_bundle"]

TIMING_CACHE_FILE = "timing.cache"
# Inspector data types → edgemed names, narrowest first (a layer's precision is the narrowest it touches).
_DTYPES = (("int8", r"int8|i8"), ("fp8", r"fp8|e4m3|e5m2"), ("fp16", r"fp16|half|f16|h16"),
           ("bf16", r"bf16|bfloat16"), ("tf32", r"tf32"), ("fp32", r"fp32|float|f32"))
_RANK = [name for name, _ in _DTYPES]


def _dtype(text: Any) -> str | None:
    """The arithmetic type a format/type string names ("Channel major FP16 format ..." → "fp16")."""
    low = str(text).lower()
    for name, pattern in _DTYPES:
        if re.search(rf"(?<![a-z0-9])(?:{pattern})(?![a-z0-9])", low):
            return name
    return None


def _tensor_types(tensors: Any) -> list[str]:
    found = []
    for t in tensors if isinstance(tensors, list) else []:
        if isinstance(t, Mapping):
            for key, value in t.items():  # "Format/Datatype" (TRT 8-10), "DataType"/"Format" (TRT 11)
                if "type" in key.lower() or "format" in key.lower():
                    found.extend(d for d in [_dtype(value)] if d)
    return found


def _tactic_type(tactic: Any) -> str | None:
    """The input type a kernel name encodes: sm80_xmma_..._i8i8_... → int8, ..._f16f16_... → fp16."""
    low = str(tactic).lower()
    for name, pattern in (("int8", r"i8i8|i8f32|int8"), ("fp16", r"f16f16|h1688|h16816|fp16|hmma"),
                          ("tf32", r"tf32"), ("fp32", r"f32f32|scudnn|sgemm|fp32")):
        if re.search(pattern, low):
            return name
    return None


def parse_layer_precisions(inspector_json: str) -> dict[str, str]:
    """Layer name → the precision it was built in, from the engine inspector's JSON.

    A layer's precision is the narrowest arithmetic type among its weights and its input and
    output tensors (ignoring index types: Int32, Int64, Bool); when the tensor formats read
    "N/A" (dynamic shapes without an execution context) the kernel's tactic name decides
    (i8i8 → int8, f16f16 → fp16); else "unknown". Tolerates both inspector schemas (TensorRT
    8-10 "Format/Datatype", 11 "DataType") and LAYER_NAMES_ONLY output (all "unknown").

    Raises:
        ArtifactError: Not JSON, or no "Layers" list.
    """
    try:
        raw = json.loads(inspector_json)
        layers = raw["Layers"]
        if not isinstance(layers, list):
            raise TypeError("'Layers' is not a list")
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ArtifactError(f"the engine inspector's output is not the expected JSON ({err}).") from err
    out: dict[str, str] = {}
    for i, layer in enumerate(layers):
        if isinstance(layer, str):  # ProfilingVerbosity.LAYER_NAMES_ONLY
            name, found = layer, []
        elif isinstance(layer, Mapping):
            name = str(layer.get("Name", f"layer {i}"))
            found = _tensor_types(layer.get("Inputs")) + _tensor_types(layer.get("Outputs"))
            weights = layer.get("Weights")
            if isinstance(weights, Mapping) and _dtype(weights.get("Type")):
                found.append(_dtype(weights.get("Type")))  # type: ignore[arg-type]
            if not found and _tactic_type(layer.get("TacticName")):
                found.append(_tactic_type(layer.get("TacticName")))  # type: ignore[arg-type]
        else:
            continue
        precision = min(found, key=_RANK.index) if found else "unknown"
        key, n = name, 2
        while key in out:  # TensorRT names are unique per engine; be safe anyway
            key, n = f"{name} #{n}", n + 1
        out[key] = precision
    return out


def precision_counts(layer_precisions: Mapping[str, str]) -> dict[str, int]:
    """How many layers run in each precision, e.g. {"fp16": 41, "fp32": 3}."""
    counts: dict[str, int] = {}
    for p in layer_precisions.values():
        counts[p] = counts.get(p, 0) + 1
    return dict(sorted(counts.items()))


def timing_cache_sha256(data: bytes) -> str:
    """Hex sha256 of a serialized timing cache (recorded so a rebuild can show it used the same one)."""
    return hashlib.sha256(data).hexdigest()


def engine_metadata(bundle: OnnxBundle, target: TargetProfile, config: TrtBuildConfig,
                    profiles: Mapping[str, ShapeProfile], *, local: Mapping[str, Any], precision_built: Precision,
                    fallback_reason: str | None, builder_flags: list[str], layer_precisions: Mapping[str, str],
                    timing_cache: bytes | None, build_seconds: float) -> EngineMeta:
    """The engine bundle's manifest metadata: the build and the host it ran on, plus the ONNX
    bundle's runtime metadata (inputs, outputs, preprocessing, organs, label map)."""
    meta = bundle.meta
    build = {
        "tensorrt_version": str(local["tensorrt_version"]),
        "cuda_version": local.get("cuda_runtime"),
        "cuda_driver": local.get("cuda_driver"),
        "gpu_name": local.get("gpu_name"),
        "compute_capability": list(local["compute_capability"]),
        "hardware_compatibility": config.hardware_compatibility,
        "version_compatible": config.version_compatible,
        "dla_core": config.dla_core,
        "gpu_fallback": config.gpu_fallback if config.dla_core is not None else None,
        "workspace_mib": config.workspace_mib,
        "builder_flags": list(builder_flags),
        "shape_profiles": shape_profiles_json(profiles),
        "timing_cache": None if timing_cache is None else {"file": TIMING_CACHE_FILE,
                                                           "sha256": timing_cache_sha256(timing_cache)},
        "layer_precisions": dict(layer_precisions),
        "layer_precision_counts": precision_counts(layer_precisions),
        "build_seconds": round(build_seconds, 3),
        "config": config.to_json(),
        "target": {"id": target.id, "name": target.name,
                   "compute_capability": list(target.compute_capability or ()), "dla_cores": target.dla_cores,
                   "jetpack": target.jetpack, "tensorrt": target.tensorrt},
        "onnx_bundle": {"digest": bundle.manifest.digest, "path": str(bundle.path), "precision": bundle.precision,
                        "opset": bundle.opset, "parity": bundle.parity},
    }
    return EngineMeta.from_json({
        "format": "tensorrt", "model": ENGINE_FILE, "precision": precision_built.value,
        "precision_requested": config.precision.value, "precision_built": precision_built.value,
        "fallback": None if fallback_reason is None else {"from": config.precision.value, "to": precision_built.value,
                                                          "reason": fallback_reason},
        **build, "preferred_backend": "trt", **meta.runtime_json(),
    })


def write_engine_bundle(out: str | os.PathLike[str], *, plan: bytes, metadata: EngineMeta | Mapping[str, Any],
                        parent: str, timing_cache: bytes | None = None, overwrite: bool = False) -> EngineBundle:
    """Write an engine bundle atomically: `model.engine` (the raw plan), optionally the timing cache,
    and the manifest; return it opened (every hash checked).

    Raises:
        ArtifactError: An empty plan, or metadata the runtime could not use.
    """
    if not plan:
        raise ArtifactError("the serialized engine is empty; the TensorRT build failed.")
    if not isinstance(metadata, EngineMeta):
        try:
            metadata = EngineMeta.from_json(metadata)
        except ArtifactError as err:
            raise ArtifactError(f"engine metadata is incomplete ({err}); build it with "
                                "edgemed.export.build_engine.") from err
    payload: dict[str, bytes | Path] = {ENGINE_FILE: bytes(plan)}
    if timing_cache is not None:
        payload[TIMING_CACHE_FILE] = bytes(timing_cache)
    write_artifact(out, kind=ENGINE_KIND, schema_version=ENGINE_SCHEMA, payload=payload,
                   metadata=metadata.to_json(), parent=parent, overwrite=overwrite)
    return EngineBundle.load(out)


def check_build_host(target: TargetProfile, config: TrtBuildConfig, local: Mapping[str, Any],
                     bundle_path: str = "BUNDLE") -> None:
    """Refuse to build here what would not run on the target: TensorRT tunes for the GPU it builds on.

    Raises:
        CompatibilityError: This GPU's compute capability is not the target's (unless hardware
            compatibility is asked and both are Ampere or newer), or the asked DLA core is absent.
    """
    cc, want = tuple(local["compute_capability"]), tuple(target.compute_capability or ())
    here = f"this GPU ({local.get('gpu_name', 'unknown')}, compute capability {cc[0]}.{cc[1]})"
    command = f"edgemed build {bundle_path} --target {target.id} --precision {config.precision.value} --out DIR"
    if config.hardware_compatibility == "ampere_plus":
        if cc < (8, 0):
            raise CompatibilityError(f"hardware-compatible engines are built on Ampere or newer GPUs; {here} is older."
                                     f" Build on an Ampere+ GPU, or on the target itself: {command}")
    elif cc != want:
        raise CompatibilityError(
            f"{here} is not {target.id}'s (compute capability {want[0]}.{want[1]}); TensorRT tunes an engine for the "
            f"GPU that builds it, so it would not run there. Build on the target itself: {command}"
            + ("; or, for Ampere-or-newer GPUs, add --hardware-compatible." if want >= (8, 0) and not target.jetpack
               else "."))
    if config.dla_core is not None and int(local.get("dla_cores", 0)) <= config.dla_core:
        raise CompatibilityError(f"{here} has {local.get('dla_cores', 0)} DLA core(s); DLA core {config.dla_core} "
                                 f"does not exist here. Build on the {target.name} itself, or drop --dla-core.")
    want_trt, have_trt = version_tuple(target.tensorrt or ""), version_tuple(str(local["tensorrt_version"]))
    n = min(len(want_trt), 2)  # "10.x" pins the major, "10.3" major.minor
    if n and have_trt[:n] != want_trt[:n] and not config.version_compatible:
        warnings.warn(f"target {target.id} assumes TensorRT {target.tensorrt}; this host has "
                      f"{local['tensorrt_version']}. The engine will run only where TensorRT "
                      f"{'.'.join(map(str, have_trt[:3]))} is installed (or build with --version-compatible).",
                      EdgemedWarning, stacklevel=3)


def build_engine(onnx_bundle: OnnxBundle | str | os.PathLike[str], target: TargetProfile | str,
                 config: TrtBuildConfig, out: str | os.PathLike[str], *, overwrite: bool = False) -> EngineBundle:
    """Build a TensorRT engine from an ONNX bundle, on (and for) this machine's GPU, and write an engine bundle.

    Every check that needs no GPU runs first (precision vs target, DLA cores, INT8 needs Q/DQ,
    shape profiles); then this GPU must match the target's compute capability. The engine is
    built with DETAILED profiling verbosity, so the manifest records the precision each layer
    actually runs in.

    Args:
        onnx_bundle: The ONNX bundle (`edgemed export`; for INT8 a QDQ one from `edgemed quantize`).
        target: The target profile (or its id, e.g. "jetson-orin-nx-16gb").
        config: Precision, workspace, shape overrides, DLA, compatibility modes, timing cache, fallback.
        out: The engine bundle directory to write (replaced atomically).

    Returns:
        The written engine bundle; `edgemed.runtime.load(out)` runs it on backend "trt".

    Raises:
        ConfigError: The request does not fit the target or the bundle (e.g. INT8 without Q/DQ).
        CompatibilityError: This GPU is not the target's, or lacks fast FP16/INT8 (without fallback).
        MissingDependencyError: tensorrt or cuda-python is missing (says where TensorRT comes from).
        BackendError: TensorRT's parser or builder failed (quotes its last error).

    Example:
        >>> from edgemed.export import TrtBuildConfig, build_engine
        >>> engine = build_engine("out/liver.edgemed", "jetson-orin-nx-16gb",
        ...                       TrtBuildConfig(precision="fp16"), "out/liver-orin.engine.d")
        >>> engine.precision, engine.meta.layer_precision_counts
        ('fp16', {'fp16': 38, 'fp32': 2})
    """
    from edgemed.artifacts import check_output

    check_output(out, kind=ENGINE_KIND, overwrite=overwrite,
                 inputs=[onnx_bundle.path if isinstance(onnx_bundle, OnnxBundle) else onnx_bundle])
    bundle = onnx_bundle if isinstance(onnx_bundle, OnnxBundle) else OnnxBundle.load(onnx_bundle)
    if isinstance(target, str):
        from edgemed.profiles import get_profile

        target = get_profile(target)
    check_build_request(bundle, target, config)
    profiles = derive_shape_profiles(bundle, config)
    trt = import_tensorrt()
    cudart = import_cudart()
    local = local_gpu_facts(trt, cudart)
    check_build_host(target, config, local, str(bundle.path))
    cache_in = None
    if config.timing_cache is not None and Path(config.timing_cache).is_file():
        cache_in = Path(config.timing_cache).read_bytes()
    start = time.perf_counter()
    built, reason = config.precision, None
    builder = trt.Builder(trt_logger(trt))
    fast = {Precision.FP16: getattr(builder, "platform_has_fast_fp16", True),
            Precision.INT8: getattr(builder, "platform_has_fast_int8", True)}
    if not fast.get(config.precision, True):
        reason = f"this GPU has no fast {config.precision.value}"
        if config.fallback != "fp32":
            raise CompatibilityError(f"{reason}; build fp32, or allow it: --fallback fp32.")
        built = Precision.FP32
    plan, flags, cache_out = _build_plan(trt, builder, bundle, target, config, profiles, built, cache_in)
    if plan is None and built is not Precision.FP32 and config.fallback == "fp32":
        reason = f"the {built.value} build failed ({_last_error(trt)})"
        built = Precision.FP32
        plan, flags, cache_out = _build_plan(trt, builder, bundle, target, config, profiles, built, cache_in)
    if plan is None:
        raise BackendError(f"TensorRT could not build {bundle.path} in {built.value} ({_last_error(trt)}). Try "
                           "more --workspace-mib, another precision, or --fallback fp32.")
    seconds = time.perf_counter() - start
    layers = parse_layer_precisions(_inspect(trt, plan, config, profiles))
    if config.timing_cache is not None:
        with atomic_file(config.timing_cache) as tmp:
            tmp.write_bytes(cache_out)
    metadata = engine_metadata(bundle, target, config, profiles, local=local, precision_built=built,
                               fallback_reason=reason, builder_flags=flags, layer_precisions=layers,
                               timing_cache=cache_out if config.timing_cache is not None else None,
                               build_seconds=seconds)
    return write_engine_bundle(out, plan=plan, metadata=metadata, parent=bundle.manifest.digest,
                               timing_cache=cache_out if config.timing_cache is not None else None, overwrite=overwrite)


def _flag(trt: ModuleType, name: str) -> Any:
    flag = getattr(trt.BuilderFlag, name, None)
    if flag is None:
        raise CompatibilityError(f"TensorRT {trt.__version__} has no BuilderFlag.{name} (TensorRT 11 builds strongly "
                                 "typed networks only). Use TensorRT 8.6-10.x, or export an fp16 ONNX bundle "
                                 "(edgemed export --precision fp16) and build it fp32.")
    return flag


def _build_plan(trt: ModuleType, builder: Any, bundle: OnnxBundle, target: TargetProfile, config: TrtBuildConfig,
                profiles: Mapping[str, ShapeProfile], precision: Precision,
                cache_in: bytes | None) -> tuple[bytes | None, list[str], bytes]:
    """One build attempt: (serialized plan or None, builder flags set, serialized timing cache)."""
    logger = trt_logger(trt)
    # TensorRT 8.x needs the EXPLICIT_BATCH flag for ONNX; 10 has only explicit batch (the flag is deprecated).
    explicit = 0 if version_tuple(trt.__version__)[:1] >= (10,) else \
        1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(explicit)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(bundle.model_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(min(parser.num_errors, 3)))
        raise BackendError(f"TensorRT {trt.__version__}'s ONNX parser rejected {bundle.model_path} ({errors}). "
                           "Re-export with opset 17 (edgemed export --opset 17).")
    cfg = builder.create_builder_config()
    cfg.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, config.workspace_mib << 20)
    cfg.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
    flags: list[str] = []
    if precision is Precision.FP32 and hasattr(trt.BuilderFlag, "TF32"):
        cfg.clear_flag(trt.BuilderFlag.TF32)  # IEEE fp32, as ONNX Runtime computes it
    if precision is Precision.INT8:
        cfg.set_flag(_flag(trt, "INT8"))
        flags.append("INT8")
    if precision is Precision.FP16 or (precision is Precision.INT8 and Precision.FP16 in target.precisions):
        cfg.set_flag(_flag(trt, "FP16"))  # with INT8: layers outside Q/DQ pairs may run fp16, not fp32
        flags.append("FP16")
    profile = builder.create_optimization_profile()
    for name, p in profiles.items():
        profile.set_shape(name, p.min, p.opt, p.max)
    cfg.add_optimization_profile(profile)
    if config.dla_core is not None:
        cfg.default_device_type = trt.DeviceType.DLA
        cfg.DLA_core = config.dla_core
        if config.gpu_fallback:
            cfg.set_flag(trt.BuilderFlag.GPU_FALLBACK)
            flags.append("GPU_FALLBACK")
    if config.hardware_compatibility == "ampere_plus":
        cfg.hardware_compatibility_level = trt.HardwareCompatibilityLevel.AMPERE_PLUS
    if config.version_compatible:
        cfg.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
        flags.append("VERSION_COMPATIBLE")
    cache = cfg.create_timing_cache(cache_in or b"")
    if not cfg.set_timing_cache(cache, ignore_mismatch=False):
        warnings.warn("the timing cache is from another GPU or TensorRT version; building without it.",
                      EdgemedWarning, stacklevel=3)
        cache = cfg.create_timing_cache(b"")
        cfg.set_timing_cache(cache, ignore_mismatch=False)
    plan = builder.build_serialized_network(network, cfg)
    return (None if plan is None else bytes(plan)), flags, bytes(cache.serialize())


def _inspect(trt: ModuleType, plan: bytes, config: TrtBuildConfig, profiles: Mapping[str, ShapeProfile]) -> str:
    """The engine inspector's JSON, with every input set to its opt shape (else formats read "N/A")."""
    runtime = trt.Runtime(trt_logger(trt))
    if config.version_compatible and hasattr(runtime, "engine_host_code_allowed"):
        runtime.engine_host_code_allowed = True
    if config.dla_core is not None:
        runtime.DLA_core = config.dla_core
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise BackendError(f"TensorRT could not load the engine it just built ({_last_error(trt)}).")
    inspector = engine.create_engine_inspector()
    context = engine.create_execution_context()
    if context is not None:
        for name, p in profiles.items():
            context.set_input_shape(name, p.opt)
        # TensorRT 10 calls the attribute execution_context; 8.x called it context.
        setattr(inspector, "execution_context" if hasattr(inspector, "execution_context") else "context", context)
    info = str(inspector.get_engine_information(trt.LayerInformationFormat.JSON))
    del inspector, context, engine, runtime  # context before engine before runtime
    return info


def _last_error(trt: ModuleType) -> str:
    errors = trt_logger(trt).errors
    return str(errors[-1]) if errors else "no message from TensorRT"
