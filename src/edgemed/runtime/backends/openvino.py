"""OpenVINO backend (x86 and ARM CPUs): reads the ONNX file directly, no conversion step."""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from edgemed._deps import require
from edgemed.errors import BackendError
from edgemed.runtime._host import session_threads
from edgemed.artifacts import TensorSpec
from edgemed.runtime._types import check_feed

__all__ = ["OpenVinoSession"]


class OpenVinoSession:
    """An ONNX model compiled for OpenVINO's CPU plugin (`Session` implementation). `run` is thread-safe.

    Each `run` borrows an infer request from a pool (a new one when all are busy) and returns
    it afterwards, so concurrent callers never share a request; outputs are copied out of the
    request's buffers before it goes back to the pool.

    Args:
        model_path: The .onnx file, or its bytes (already read and checked by the caller).
        threads: CPU inference threads; None: $EDGEMED_THREADS, else the physical cores free when the session opens.
        throughput: Compile with the THROUGHPUT hint (parallel streams, for several threads
            calling `run` at once) instead of LATENCY (all cores on one call).

    Raises:
        MissingDependencyError: openvino is not installed (pip install 'edgemed[openvino]').
        BackendError: The model cannot be read or compiled.

    Example:
        >>> with OpenVinoSession("out/liver.edgemed/model.onnx") as session:
        ...     logits = session.run({"image": slices})["logits"]
    """

    def __init__(self, model_path: str | os.PathLike[str] | bytes, *, threads: int | None = None,
                 throughput: bool = False) -> None:
        ov = require("openvino", extra="openvino")
        self.threads = session_threads(threads)[0]
        self.hint = "THROUGHPUT" if throughput else "LATENCY"
        config = {
            "PERFORMANCE_HINT": self.hint,
            "INFERENCE_NUM_THREADS": self.threads,
            # CPUs with AVX512-BF16 / AMX otherwise run in bf16 by default: an fp32 bundle must stay fp32,
            # or the masks drift from the parity the export measured.
            "INFERENCE_PRECISION_HINT": "f32",
        }
        try:
            core = ov.Core()
            # Bytes: read from memory (the ONNX frontend takes a serialized model), never the file again.
            model = core.read_model(model_path) if isinstance(model_path, bytes) else str(Path(model_path))
            self._compiled: Any = core.compile_model(model, "CPU", config)
        except RuntimeError as err:  # OpenVINO reports every load/compile failure as RuntimeError
            what = "the model" if isinstance(model_path, bytes) else model_path
            raise BackendError(f"OpenVINO could not compile {what} ({_first_line(err)}). Check the file is a "
                               "valid ONNX model, or use backend='ort'.") from err
        self.library_version: str = str(ov.__version__)
        self.inputs: tuple[TensorSpec, ...] = tuple(_spec(p) for p in self._compiled.inputs)
        self.outputs: tuple[TensorSpec, ...] = tuple(_spec(p) for p in self._compiled.outputs)
        self._idle: list[Any] = []
        self._lock = threading.Lock()

    @property
    def description(self) -> str:
        """A short description for reports, e.g. "openvino 2026.4 CPU LATENCY (8 threads)"."""
        return f"openvino {self.library_version.split('-')[0]} CPU {self.hint} ({self.threads} threads)"

    def run(self, feed: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the model on a pooled infer request.

        Raises:
            InputError: The feed does not match the model's inputs.
            BackendError: OpenVINO failed while running.
        """
        checked = check_feed(self.inputs, feed)
        request = self._borrow()
        try:
            result = request.infer(checked)
            # Copy: the arrays alias the request's buffers, which the next borrower overwrites.
            return {spec.name: np.array(result[port], copy=True)
                    for spec, port in zip(self.outputs, self._compiled.outputs)}
        except RuntimeError as err:
            raise BackendError(f"OpenVINO failed running the model ({_first_line(err)}).") from err
        finally:
            with self._lock:
                self._idle.append(request)

    def close(self) -> None:
        """Drop the compiled model and its infer requests."""
        with self._lock:
            self._idle.clear()
            self._compiled = None

    def __enter__(self) -> "OpenVinoSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _borrow(self) -> Any:
        with self._lock:
            if self._compiled is None:
                raise BackendError("this OpenVinoSession is closed; open a new one with edgemed.runtime.load(...).")
            if self._idle:
                return self._idle.pop()
            return self._compiled.create_infer_request()


def _spec(port: Any) -> TensorSpec:
    # OpenVINO keeps no names for dynamic dimensions: they read "?".
    shape = tuple(d.get_length() if d.is_static else "?" for d in port.get_partial_shape())
    return TensorSpec(port.get_any_name(), np.dtype(port.get_element_type().to_dtype()).name, shape)


def _first_line(err: BaseException) -> str:
    lines = [line for line in str(err).strip().splitlines() if line and not line.startswith("Exception from")]
    return lines[0][:300] if lines else type(err).__name__
