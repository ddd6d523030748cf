"""Inference backends, one module each, all implementing `edgemed.runtime.Session`.

A new backend is a new module here plus one line in `BACKENDS`. Backend libraries are imported
when a session is opened, never when this package is imported.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import os
from dataclasses import dataclass
from typing import Any

from edgemed.errors import ConfigError, MissingDependencyError
from edgemed.runtime._types import Session

__all__ = ["AUTO_ORDER", "BACKENDS", "BackendInfo", "open_session", "resolve_backend"]


@dataclass(frozen=True)
class BackendInfo:
    """A registered backend.

    Attributes:
        session: "module:Class" of its `Session` implementation.
        library: The Python module it needs (checked by `resolve_backend("auto")`).
        extra: The edgemed pip extra that installs it.
    """

    session: str
    library: str
    extra: str


BACKENDS: dict[str, BackendInfo] = {
    "ort": BackendInfo("edgemed.runtime.backends.ort:OrtSession", "onnxruntime", "runtime"),
    "openvino": BackendInfo("edgemed.runtime.backends.openvino:OpenVinoSession", "openvino", "openvino"),
    "trt": BackendInfo("edgemed.runtime.backends.trt:TrtSession", "tensorrt", "trt"),
}
# "auto" takes the first installed: ORT runs everywhere (and picks CUDA itself when present).
AUTO_ORDER = ("ort", "openvino")


def resolve_backend(name: str, *, prefer: str | None = None) -> str:
    """The registered backend `name` stands for ("auto": `prefer` when it is installed, else the
    first installed of `AUTO_ORDER`).

    Raises:
        ConfigError: Unknown name (with a suggestion).
        MissingDependencyError: "auto" and no backend library is installed.
    """
    if name == "auto":
        preferred = (prefer,) if prefer in BACKENDS else ()
        for candidate in (*preferred, *AUTO_ORDER):
            if importlib.util.find_spec(BACKENDS[candidate].library) is not None:
                return candidate
        raise MissingDependencyError(
            "no inference backend is installed. Install one: pip install 'edgemed[runtime]' (ONNX Runtime) "
            "or pip install 'edgemed[openvino]'."
        )
    if name not in BACKENDS:
        close = difflib.get_close_matches(name, [*BACKENDS, "auto"], n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"unknown backend {name!r}.{hint} Choose one of: {', '.join([*BACKENDS, 'auto'])}.")
    return name


def open_session(backend: str, model_path: str | os.PathLike[str] | bytes, *, threads: int | None = None,
                 throughput: bool = False, engine_meta: Any = None) -> Session:
    """Open `model_path` on `backend` ("ort", "openvino", "trt" for engines, or "auto").

    Args:
        backend: A name in `BACKENDS`, or "auto" (the first installed of `AUTO_ORDER`).
        model_path: The model file (a bundle's `model_path`), or the model's bytes already read
            and hash-checked (what `edgemed.runtime.load` passes, so the bytes checked are the
            bytes run).
        engine_meta: For "trt" given bytes: the engine bundle's `EngineMeta` (checked against
            this GPU and TensorRT before deserializing).
        threads: Intra-op CPU threads; None: the physical cores available to this process.
        throughput: Tune for many concurrent `run` calls rather than one call's latency
            (backends that distinguish the two, e.g. OpenVINO's THROUGHPUT hint).

    Raises:
        ConfigError: Unknown backend or a thread count below 1.
        MissingDependencyError: The backend's library is not installed (names the pip extra).
        BackendError: The backend could not load the model.

    Example:
        >>> with open_session("openvino", bundle.model_path, threads=4) as session:
        ...     logits = session.run({"image": slices})["logits"]
    """
    if threads is not None and threads < 1:
        raise ConfigError(f"threads={threads} must be >= 1, or None for the number of physical cores.")
    info = BACKENDS[resolve_backend(backend)]
    module, _, cls = info.session.partition(":")
    session_type = getattr(importlib.import_module(module), cls)
    extra = {} if engine_meta is None else {"meta": engine_meta}
    return session_type(model_path, threads=threads, throughput=throughput, **extra)
