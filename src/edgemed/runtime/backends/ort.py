"""ONNX Runtime backend: CUDA when the installed build has it, else CPU."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from edgemed._deps import require
from edgemed.errors import BackendError
from edgemed.runtime._host import session_threads
from edgemed.artifacts import TensorSpec
from edgemed.runtime._types import check_feed

__all__ = ["OrtSession"]

# ONNX Runtime's tensor type strings → numpy dtype names.
_ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
               "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int32)": "int32", "tensor(int64)": "int64",
               "tensor(bool)": "bool"}


class OrtSession:
    """An ONNX model on ONNX Runtime (`Session` implementation). `run` is thread-safe.

    Args:
        model_path: The .onnx file, or its bytes (already read and checked by the caller).
        threads: Intra-op threads; None: $EDGEMED_THREADS, else the physical cores free when the session opens.
        throughput: Accepted for the `Session` interface; ONNX Runtime has no latency/throughput mode.
        providers: Execution providers in order of preference; None: CUDA first when this
            onnxruntime build offers it, then CPU.

    Raises:
        MissingDependencyError: onnxruntime is not installed.
        BackendError: The model cannot be loaded.

    Example:
        >>> with OrtSession("out/liver.edgemed/model.onnx", threads=4) as session:
        ...     logits = session.run({"image": slices})["logits"]
    """

    def __init__(self, model_path: str | os.PathLike[str] | bytes, *, threads: int | None = None, throughput: bool = False,
                 providers: Sequence[str] | None = None) -> None:
        ort = require("onnxruntime", extra="runtime")
        self.threads, spin = session_threads(threads)
        options = ort.SessionOptions()
        if not spin:  # a busy machine: idle workers sleep, a spinning one takes a CPU other programs need
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1  # sequential execution: inter-op threads would sit idle
        options.enable_cpu_mem_arena = True
        options.enable_mem_pattern = True
        options.log_severity_level = 3  # errors only: ORT's warnings go to stderr, not the user's log
        available = ort.get_available_providers()
        if providers is None:
            providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
        self._errors = _ort_errors(ort)
        try:
            model = model_path if isinstance(model_path, bytes) else str(Path(model_path))
            self._session: Any = ort.InferenceSession(model, sess_options=options, providers=list(providers))
        except self._errors as err:
            what = "the model" if isinstance(model_path, bytes) else model_path
            raise BackendError(f"ONNX Runtime could not load {what} ({_first_line(err)}). The file is not a "
                               "valid ONNX model for this onnxruntime; re-export it or upgrade onnxruntime.") from err
        self.providers: tuple[str, ...] = tuple(self._session.get_providers())
        self.library_version: str = str(ort.__version__)
        self.inputs: tuple[TensorSpec, ...] = tuple(_spec(a) for a in self._session.get_inputs())
        self.outputs: tuple[TensorSpec, ...] = tuple(_spec(a) for a in self._session.get_outputs())
        self._output_names = [spec.name for spec in self.outputs]

    @property
    def description(self) -> str:
        """A short description for reports, e.g. "onnxruntime 1.32.0 CPUExecutionProvider (8 threads)"."""
        return f"onnxruntime {self.library_version} {self.providers[0]} ({self.threads} threads)"

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model; ORT sessions may be run from several threads at once.

        Raises:
            InputError: The feed does not match the model's inputs.
            BackendError: ONNX Runtime failed while running.
        """
        session = self._session
        if session is None:
            raise BackendError("this OrtSession is closed; open a new one with edgemed.runtime.load(...).")
        checked = check_feed(self.inputs, feed)
        try:
            values = session.run(self._output_names, checked)
        except self._errors as err:
            raise BackendError(f"ONNX Runtime failed running the model ({_first_line(err)}).") from err
        return dict(zip(self._output_names, values))

    def close(self) -> None:
        """Drop the ONNX Runtime session (its memory is freed when no run is in flight)."""
        self._session = None

    def __enter__(self) -> "OrtSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _spec(arg: Any) -> TensorSpec:
    shape = tuple(d if isinstance(d, int) else (d or "?") for d in arg.shape)
    return TensorSpec(arg.name, _ORT_DTYPES.get(arg.type, arg.type), shape)


def _ort_errors(ort: ModuleType) -> tuple[type[BaseException], ...]:
    """ONNX Runtime's own exception classes (they derive from Exception directly), plus the
    RuntimeError its Python layer raises for load failures."""
    state = ort.capi.onnxruntime_pybind11_state
    own = tuple(c for c in vars(state).values() if isinstance(c, type) and issubclass(c, Exception))
    return (*own, RuntimeError)


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0][:300] if text else type(err).__name__
