"""TensorRT backend: a serialized engine (`model.engine` of an engine bundle) on the local NVIDIA GPU.

tensorrt and cuda-python are imported when a session is opened, never when this module is
imported (device software without a GPU imports the runtime too). Written against the
TensorRT 10 Python API (name-based I/O: `set_input_shape`, `set_tensor_address`,
`execute_async_v3`), which TensorRT 8.5/8.6 (JetPack 5) also have.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import re
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edgemed._deps import require
from edgemed.errors import (ArtifactError, BackendError, CompatibilityError, ConfigError, InputError,
                            MissingDependencyError)
from edgemed.artifacts import (ENGINE_KIND, MANIFEST, EngineBuild, EngineBundle, EngineMeta, TensorSpec,
                               read_manifest)
from edgemed.runtime._types import check_feed

__all__ = ["TrtSession", "check_engine_compatible", "fit_to_profile", "import_cudart", "import_tensorrt",
           "local_gpu_facts", "rebuild_command", "trt_logger", "version_tuple"]

_GET_TENSORRT = ("That extra brings cuda-python; TensorRT itself is not a plain PyPI install: on Jetson it comes with "
                 "JetPack (`sudo apt install nvidia-jetpack`; python3-libnvinfer for the system Python), on x86-64 "
                 "GPUs install NVIDIA's wheel (`pip install tensorrt --extra-index-url https://pypi.nvidia.com`) "
                 "or use an NGC TensorRT container.")


def import_tensorrt() -> ModuleType:
    """`import tensorrt`, or MissingDependencyError saying where TensorRT comes from (JetPack, NVIDIA's index)."""
    try:
        return require("tensorrt", extra="trt")
    except MissingDependencyError as err:
        try:
            installed = importlib.util.find_spec("tensorrt") is not None
        except (ImportError, ValueError):
            installed = False
        if installed:
            raise  # installed but broken: require's message says so
        raise MissingDependencyError(f"{err}. {_GET_TENSORRT}") from err


def import_cudart() -> ModuleType:
    """cuda-python's CUDA runtime bindings: `cuda.bindings.runtime` (cuda-python >= 12.6), else `cuda.cudart`."""
    try:
        return require("cuda.bindings.runtime", extra="trt")
    except MissingDependencyError:
        return require("cuda.cudart", extra="trt")


@functools.lru_cache(maxsize=None)
def trt_logger(trt: ModuleType) -> Any:
    """The process's one TensorRT logger (builder and runtime must share it); keeps the last errors.

    Warnings and errors go to Python's logging ("edgemed.trt"); `logger.errors` holds the last 20
    error messages, which edgemed quotes when a build or deserialization fails.
    """
    import collections
    import logging

    log = logging.getLogger("edgemed.trt")

    class _Logger(trt.ILogger):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: collections.deque[str] = collections.deque(maxlen=20)

        def log(self, severity: Any, msg: str) -> None:
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(msg)
                log.error(msg)
            elif severity == trt.ILogger.Severity.WARNING:
                log.warning(msg)

    return _Logger()


def version_tuple(version: str) -> tuple[int, ...]:
    """The leading numbers of a version string: "10.3.0.30" → (10, 3, 0, 30), "8.6.1.post1" → (8, 6, 1)."""
    numbers = []
    for part in str(version).split("."):
        match = re.match(r"\d+", part)
        if match is None:
            break
        numbers.append(int(match.group()))
    return tuple(numbers)


def _cuda(cudart: ModuleType, result: Any, what: str) -> Any:
    """Unpack a cuda-python call's (error, value...) tuple, raising BackendError on a CUDA error."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if err != cudart.cudaError_t.cudaSuccess:
        _, text = cudart.cudaGetErrorString(err)
        text = text.decode(errors="replace") if isinstance(text, bytes) else text
        raise BackendError(f"CUDA failed in {what}: {text}. Check the GPU with nvidia-smi (or tegrastats on Jetson).")
    return values[0] if len(values) == 1 else tuple(values)


def local_gpu_facts(trt: ModuleType, cudart: ModuleType) -> dict[str, Any]:
    """This machine's TensorRT version, CUDA versions and current GPU (name, compute capability, DLA cores)."""
    device = _cuda(cudart, cudart.cudaGetDevice(), "cudaGetDevice")
    prop = _cuda(cudart, cudart.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    name = prop.name.split(b"\0", 1)[0].decode(errors="replace") if isinstance(prop.name, bytes) else str(prop.name)
    runtime = int(_cuda(cudart, cudart.cudaRuntimeGetVersion(), "cudaRuntimeGetVersion"))
    driver = int(_cuda(cudart, cudart.cudaDriverGetVersion(), "cudaDriverGetVersion"))
    dla = int(getattr(trt.Runtime(trt_logger(trt)), "num_DLA_cores", 0))
    return {"tensorrt_version": str(trt.__version__), "gpu_name": name, "compute_capability": [int(prop.major),
            int(prop.minor)], "cuda_runtime": f"{runtime // 1000}.{runtime % 1000 // 10}",
            "cuda_driver": f"{driver // 1000}.{driver % 1000 // 10}", "dla_cores": dla, "device": int(device)}


def _build_facts(meta: EngineBuild | Mapping[str, Any], engine: str) -> EngineBuild:
    """An engine's build facts, from the typed record or a manifest's metadata block."""
    if isinstance(meta, EngineBuild):
        return meta
    try:
        return EngineBuild.from_json(meta)
    except ArtifactError as err:
        raise ArtifactError(f"{engine}: the manifest lacks the TensorRT version or compute capability ({err}); "
                            f"rebuild it: {_rebuild(None, None)}") from err


def rebuild_command(meta: EngineBuild | Mapping[str, Any] | None, *, out: str | None = None) -> str:
    """The `edgemed build` command that rebuilds an engine like the one `meta` (its build facts) describes."""
    try:
        facts = None if meta is None else _build_facts(meta, "this engine")
    except ArtifactError:
        facts = None
    return _rebuild(facts, out)


def _rebuild(facts: EngineBuild | None, out: str | None) -> str:
    parent = ((facts.onnx_bundle or {}).get("path") if facts else None) or "BUNDLE"
    precision = (facts.precision_requested if facts else None) or "fp16"
    parts = ["edgemed build", str(parent), "--target ID", f"--precision {precision}"]
    if facts is not None and facts.version_compatible:
        parts.append("--version-compatible")
    if facts is not None and facts.dla_core is not None:
        parts.append(f"--dla-core {facts.dla_core}")
    parts.append(f"--out {out or 'ENGINE_DIR'}")
    return " ".join(parts)


def check_engine_compatible(meta: EngineBuild | Mapping[str, Any], local: Mapping[str, Any], *,
                            engine: str = "this engine") -> None:
    """Refuse an engine this host's TensorRT or GPU cannot run, before TensorRT tries.

    Rules (TensorRT's engine-compatibility documentation): a plan runs only on the TensorRT
    version that built it (major.minor.patch; the build number is ignored) unless it was built
    `version_compatible` (TensorRT >= 8.6), which also runs on any later version; and only on
    the compute capability it was built on, unless built with hardware compatibility
    "ampere_plus", which runs on any GPU of compute capability >= 8.0.

    Args:
        meta: The engine's build facts (`EngineBundle.meta.build`), or its manifest's metadata block
            (`tensorrt_version`, `compute_capability`, `version_compatible`, `hardware_compatibility`, ...).
        local: This host, as `local_gpu_facts` reports it (`tensorrt_version`, `compute_capability`,
            optionally `gpu_name`, `dla_cores`).
        engine: How to name the engine in the message (its directory name).

    Raises:
        CompatibilityError: What differs, and the `edgemed build` command that rebuilds it here.
    """
    facts = _build_facts(meta, engine)
    try:
        built_v, local_v = version_tuple(facts.tensorrt_version)[:3], version_tuple(local["tensorrt_version"])[:3]
        built_cc, local_cc = facts.compute_capability, tuple(int(v) for v in local["compute_capability"])
    except (KeyError, TypeError, ValueError) as err:
        raise ArtifactError(f"{engine}: the manifest lacks the TensorRT version or compute capability ({err}); "
                            f"rebuild it: {_rebuild(facts, None)}") from err
    problems = []
    bv, lv = ".".join(map(str, built_v)), ".".join(map(str, local_v))
    if facts.version_compatible:
        if local_v < built_v:
            problems.append(f"was built version-compatible with TensorRT {bv}, which runs on {bv} and later; "
                            f"this host has TensorRT {lv}")
    elif local_v != built_v:
        problems.append(f"was built with TensorRT {bv}; this host has TensorRT {lv} (an engine runs only on the "
                        "TensorRT that built it, unless built with --version-compatible)")
    gpu = f" ({local['gpu_name']})" if local.get("gpu_name") else ""
    built_gpu = f" ({facts.gpu_name})" if facts.gpu_name else ""
    if facts.hardware_compatibility == "ampere_plus":
        if local_cc < (8, 0):
            problems.append(f"was built for Ampere-or-newer GPUs; this GPU{gpu} is compute capability "
                            f"{local_cc[0]}.{local_cc[1]}")
    elif local_cc != built_cc:
        problems.append(f"was built for compute capability {built_cc[0]}.{built_cc[1]}{built_gpu}; this GPU{gpu} is "
                        f"{local_cc[0]}.{local_cc[1]}")
    dla_core, dla_cores = facts.dla_core, local.get("dla_cores")
    if dla_core is not None and dla_cores is not None and int(dla_core) >= int(dla_cores):
        problems.append(f"runs on DLA core {dla_core}; this host has {dla_cores} DLA core(s)")
    if problems:
        raise CompatibilityError(f"{engine} {'; and it '.join(problems)}. Rebuild it on this machine: "
                                 f"{_rebuild(facts, None)}")


def fit_to_profile(x: np.ndarray, lo: Sequence[int], hi: Sequence[int],
                   run: Callable[[np.ndarray], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Run `run` on `x` within an engine's shape range [lo, hi], padding or splitting where needed.

    A batch larger than the profile's maximum is split into chunks; a batch or height/width
    smaller than its minimum (always so for DLA engines, whose shapes are fixed) is zero-padded
    at the end — 0 is the student's own padding value (air) — and every output axis that was
    padded is cropped back. Sizes above the maximum cannot be fitted.

    Raises:
        InputError: A non-batch dimension outside the range (names the rebuild option).
    """
    shape = tuple(x.shape)
    if all(a <= s <= b for s, a, b in zip(shape, lo, hi)):
        return run(x)
    for axis in range(1, len(shape)):
        if shape[axis] > hi[axis]:
            raise InputError(
                f"input shape {shape} exceeds the engine's largest shape {tuple(hi)} on axis {axis}. Rebuild the "
                "engine for larger slices (edgemed build ... --size-px MIN OPT MAX) or pass a smaller volume.")
    if shape[0] > hi[0]:
        parts = [fit_to_profile(x[i:i + hi[0]], lo, hi, run) for i in range(0, shape[0], hi[0])]
        return {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    target = tuple(max(s, a) for s, a in zip(shape, lo))
    padded = np.zeros(target, dtype=x.dtype)
    padded[tuple(slice(0, s) for s in shape)] = x
    out = run(padded)
    cropped = {}
    for name, y in out.items():
        index = [slice(None)] * y.ndim
        index[0] = slice(0, shape[0])
        for axis in range(2, min(y.ndim, len(shape))):  # spatial axes the output shares with the input
            if target[axis] != shape[axis] and y.shape[axis] == target[axis]:
                index[axis] = slice(0, shape[axis])
        cropped[name] = np.ascontiguousarray(y[tuple(index)])
    return cropped


def _engine_meta(path: Path) -> EngineMeta | None:
    """The typed metadata of the engine bundle `path` sits in, or None for a bare engine file."""
    if not (path.parent / MANIFEST).is_file():
        return None
    manifest = read_manifest(path.parent, verify=False)  # the payload's hashes were checked by load()
    return EngineBundle.from_manifest(path.parent, manifest).meta if manifest.kind == ENGINE_KIND else None


class TrtSession:
    """A TensorRT engine on the local GPU (`Session` implementation). `run` is thread-safe (serialized).

    Before deserializing, the engine bundle's manifest (when `model_path` sits in one) is
    checked against this host: TensorRT version and compute capability (`check_engine_compatible`).
    Inputs and outputs are float32 numpy arrays, copied to and from device buffers that grow to
    the largest shape seen. Feeds outside the engine's shape profile are fitted
    (`fit_to_profile`): larger batches split, smaller shapes zero-padded and cropped back.

    Args:
        model_path: The serialized engine (`model.engine` of an engine bundle), or its bytes
            already read and hash-checked (then `meta` gives the bundle's metadata).
        meta: The engine bundle's metadata, when `model_path` is bytes (None: a bare engine, no
            compatibility check beyond TensorRT's own).
        threads: Accepted for the `Session` interface; TensorRT runs on the GPU.
        throughput: Accepted for the `Session` interface.

    Raises:
        MissingDependencyError: tensorrt or cuda-python is not installed (says where to get them).
        CompatibilityError: The engine was built for another GPU or TensorRT (names the rebuild command).
        ConfigError: `model_path` is an ONNX file, not an engine.
        BackendError: TensorRT cannot deserialize the engine, or CUDA fails.

    Example:
        >>> with TrtSession("out/liver-orin.engine.d/model.engine") as session:
        ...     logits = session.run({"image": slices})["logits"]
    """

    def __init__(self, model_path: str | os.PathLike[str] | bytes, *, threads: int | None = None,
                 throughput: bool = False, meta: EngineMeta | None = None) -> None:
        plan: bytes | None = model_path if isinstance(model_path, bytes) else None
        path = Path("model.engine" if plan is not None else model_path)  # type: ignore[arg-type]
        if path.suffix == ".onnx":
            raise ConfigError(f"{path} is an ONNX model; backend 'trt' runs TensorRT engines. Build one on the "
                              f"target: edgemed build {path.parent} --target ID --out DIR")
        self.threads = threads
        if plan is None:
            meta = _engine_meta(path)
        trt = import_tensorrt()
        cudart = import_cudart()
        self._cudart = cudart
        local = local_gpu_facts(trt, cudart)
        if meta is not None:
            check_engine_compatible(meta.build, local, engine=path.parent.name or "this engine")
        self.library_version: str = str(trt.__version__)
        self.gpu_name: str = local["gpu_name"]
        logger = self._logger = trt_logger(trt)
        self._runtime = trt.Runtime(logger)
        build = None if meta is None else meta.build
        if build is not None and build.version_compatible and hasattr(self._runtime, "engine_host_code_allowed"):
            self._runtime.engine_host_code_allowed = True  # version-compatible plans embed their lean runtime
        if build is not None and build.dla_core is not None:
            self._runtime.DLA_core = build.dla_core
        if plan is None:
            try:
                plan = path.read_bytes()
            except OSError as err:
                raise BackendError(f"cannot read the engine {path} ({err}).") from err
        self._engine = self._runtime.deserialize_cuda_engine(plan)
        if self._engine is None:
            last = logger.errors[-1] if logger.errors else "no message"
            raise BackendError(f"TensorRT {trt.__version__} could not deserialize {path} ({last}). It was built by "
                               f"another TensorRT or for another GPU; rebuild it here: "
                               f"{rebuild_command(build)}")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise BackendError(f"TensorRT could not create an execution context for {path} (out of GPU memory?).")
        self.inputs, self.outputs, self._ranges = self._io_specs(trt, meta)
        self._stream = _cuda(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._buffers: dict[str, tuple[int, int]] = {}  # name → (device pointer, bytes)
        self._lock = threading.Lock()

    @property
    def description(self) -> str:
        """A short description for reports, e.g. "tensorrt 10.3.0 on Orin"."""
        return f"tensorrt {self.library_version} on {self.gpu_name}"

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the engine (one call at a time: an execution context is not reentrant).

        Raises:
            InputError: The feed does not match the inputs, or exceeds the engine's shape profile.
            BackendError: TensorRT or CUDA failed, or the session is closed.
        """
        checked = check_feed(self.inputs, feed)
        with self._lock:
            if self._context is None:
                raise BackendError("this TrtSession is closed; open a new one with edgemed.runtime.load(...).")
            if len(self.inputs) == 1:
                name = self.inputs[0].name
                lo, hi = self._ranges[name]
                return fit_to_profile(checked[name], lo, hi, lambda x: self._execute({name: x}))
            return self._execute(checked)

    def close(self) -> None:
        """Free the device buffers and the stream; drop context, engine and runtime (in that order)."""
        with self._lock:
            cudart = self._cudart
            for ptr, _ in self._buffers.values():
                cudart.cudaFree(ptr)
            self._buffers.clear()
            if self._context is not None:
                cudart.cudaStreamDestroy(self._stream)
            self._context = None
            self._engine = None
            self._runtime = None

    def __enter__(self) -> "TrtSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _io_specs(self, trt: ModuleType, meta: EngineMeta | None) -> tuple[tuple[TensorSpec, ...],
                                                                         tuple[TensorSpec, ...], dict[str, Any]]:
        # The manifest's shapes are the model's ("batch", 3, "height", "width"): a DLA engine's fixed
        # (8, 3, 336, 336) is the engine's business, `fit_to_profile` pads and splits to it.
        declared = {} if meta is None else {t.name: t for t in (*meta.inputs, *meta.outputs)}
        engine = self._engine
        inputs, outputs, ranges = [], [], {}
        for i in range(engine.num_io_tensors):
            name = engine.get_tensor_name(i)
            dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name))).name
            shape = tuple(int(d) if d >= 0 else "?" for d in engine.get_tensor_shape(name))
            if name in declared and len(declared[name].shape) == len(shape):
                shape = declared[name].shape
            if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                inputs.append(TensorSpec(name, dtype, shape))
                lo, _, hi = engine.get_tensor_profile_shape(name, 0)
                ranges[name] = (tuple(int(d) for d in lo), tuple(int(d) for d in hi))
            else:
                outputs.append(TensorSpec(name, dtype, shape))
        return tuple(inputs), tuple(outputs), ranges

    def _device(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                _cuda(self._cudart, self._cudart.cudaFree(ptr), "cudaFree")
            ptr = int(_cuda(self._cudart, self._cudart.cudaMalloc(nbytes), f"cudaMalloc({nbytes} bytes)"))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def _execute(self, arrays: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        cudart, ctx, stream = self._cudart, self._context, self._stream
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        for name, x in arrays.items():
            if not ctx.set_input_shape(name, tuple(x.shape)):
                lo, hi = self._ranges[name]
                raise InputError(f"TensorRT refused input {name!r} of shape {x.shape}; the engine takes {lo} to {hi}.")
            ptr = self._device(name, x.nbytes)
            _cuda(cudart, cudart.cudaMemcpyAsync(ptr, x.ctypes.data, x.nbytes, h2d, stream), "cudaMemcpyAsync")
            ctx.set_tensor_address(name, ptr)
        results = {}
        for spec in self.outputs:
            out = np.empty(tuple(ctx.get_tensor_shape(spec.name)), dtype=spec.dtype)
            ctx.set_tensor_address(spec.name, self._device(spec.name, max(out.nbytes, 1)))
            results[spec.name] = out
        if not ctx.execute_async_v3(int(stream)):
            last = self._logger.errors[-1] if self._logger.errors else "no message"
            raise BackendError(f"TensorRT failed running the engine ({last}).")
        for name, out in results.items():
            _cuda(cudart, cudart.cudaMemcpyAsync(out.ctypes.data, self._buffers[name][0], out.nbytes, d2h, stream),
                  "cudaMemcpyAsync")
        _cuda(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        return results

