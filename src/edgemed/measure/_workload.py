"""Reference workloads: fixed computations timed beside the candidate to measure the machine's speed now.

"conv" is a tiny three-layer conv net run on the candidate's own backend with the same thread
count: it meets the same kernels, thread pool, caches and clock as the model under test. Its ONNX
file is written here by a few lines of protobuf encoding, so the gate needs neither the onnx
package nor torch (device software has only numpy and a runtime). "matmul" is a numpy float32
matmul, for backends that do not run ONNX files (TensorRT engines).

A workload is sized once, when a baseline is created, to take about as long as one candidate
call (pairs of similar length see the same moment of machine load); the baseline stores the size
and every later check rebuilds exactly that workload.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgemed.errors import ArtifactError, ConfigError

__all__ = ["ONNX_BACKENDS", "Workload", "WorkloadSpec", "conv_model_bytes", "open_workload", "size_workload"]

#: Backends that run ONNX files, so can run the "conv" workload.
ONNX_BACKENDS = ("ort", "openvino")
_CONV = {"channels": 16, "size": 32, "layers": 3}
_MATMUL_N = 192
_MAX_BATCH = 64


@dataclass(frozen=True)
class WorkloadSpec:
    """Which reference workload, and how big (stored in baselines).

    Attributes:
        kind: "conv" or "matmul".
        batch: Conv: samples per call (channels x size x size each). Matmul: ignored (1).
        calls: Workload calls per timed sample (when one call is far shorter than the candidate's).
    """

    kind: str
    batch: int = 1
    calls: int = 1

    def __post_init__(self) -> None:
        if self.kind not in ("conv", "matmul"):
            raise ConfigError(f"reference workload {self.kind!r}; use 'conv' or 'matmul'.")
        if self.batch < 1 or self.calls < 1:
            raise ConfigError(f"reference workload batch={self.batch}, calls={self.calls} must be >= 1.")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (with the fixed shape, for the record)."""
        shape = _CONV if self.kind == "conv" else {"n": _MATMUL_N}
        return {"kind": self.kind, "batch": self.batch, "calls": self.calls, **shape}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> "WorkloadSpec":
        """Inverse of `to_json`.

        Raises:
            ArtifactError: Malformed, or a workload shape this edgemed does not build.
        """
        try:
            spec = cls(kind=str(raw["kind"]), batch=int(raw["batch"]), calls=int(raw["calls"]))
        except (KeyError, TypeError, ValueError, ConfigError) as err:
            raise ArtifactError(f"the baseline's reference workload {raw!r} is malformed ({err}); "
                                "re-create the baseline with --update-baseline.") from err
        if any(raw.get(k) != v for k, v in spec.to_json().items()):
            raise ArtifactError(f"the baseline's reference workload {raw!r} differs from this edgemed's "
                                f"{spec.to_json()}; re-create the baseline with --update-baseline.")
        return spec


class Workload:
    """An opened reference workload: call `run()` to execute one timed sample of it."""

    def __init__(self, spec: WorkloadSpec, run: Callable[[], object], close: Callable[[], None]) -> None:
        self.spec = spec
        self._run = run
        self._close = close

    def run(self) -> None:
        """Execute the workload `spec.calls` times."""
        for _ in range(self.spec.calls):
            self._run()

    def close(self) -> None:
        """Release the backend session (and its temporary model file)."""
        self._close()

    def __enter__(self) -> "Workload":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_workload(spec: WorkloadSpec, *, backend: str, threads: int | None) -> Workload:
    """Build and open a reference workload.

    Raises:
        ConfigError: A "conv" workload on a backend that does not run ONNX files.
        MissingDependencyError: The backend is not installed.
    """
    if spec.kind == "matmul":
        rng = np.random.default_rng(0)
        a = rng.random((_MATMUL_N, _MATMUL_N), dtype=np.float32)
        b = rng.random((_MATMUL_N, _MATMUL_N), dtype=np.float32)
        out = np.empty_like(a)
        return Workload(spec, lambda: np.matmul(a, b, out=out), lambda: None)
    if backend not in ONNX_BACKENDS:
        raise ConfigError(f"the 'conv' reference workload runs on ONNX backends ({', '.join(ONNX_BACKENDS)}), "
                          f"not {backend!r}; use workload='matmul'.")
    from edgemed.runtime.backends import open_session

    tmp = tempfile.TemporaryDirectory(prefix="edgemed-gate-")
    path = Path(tmp.name) / "reference_conv.onnx"
    path.write_bytes(conv_model_bytes())
    session = open_session(backend, path, threads=threads)
    x = np.random.default_rng(0).random((spec.batch, _CONV["channels"], _CONV["size"], _CONV["size"]),
                                        dtype=np.float32)

    def close() -> None:
        session.close()
        tmp.cleanup()

    return Workload(spec, lambda: session.run({"x": x}), close)


def size_workload(kind: str, target_ms: float, *, backend: str, threads: int | None) -> WorkloadSpec:
    """The `kind` workload sized to take about `target_ms` per sample on this machine now."""
    with open_workload(WorkloadSpec(kind), backend=backend, threads=threads) as probe:
        unit_ms = _best_ms(probe.run)
    want = max(1.0, target_ms / max(unit_ms, 1e-3))
    if kind == "matmul":
        return WorkloadSpec("matmul", calls=int(round(want)))
    batch = int(min(_MAX_BATCH, round(want)))
    with open_workload(WorkloadSpec("conv", batch=batch), backend=backend, threads=threads) as probe:
        batch_ms = _best_ms(probe.run)
    return WorkloadSpec("conv", batch=batch, calls=max(1, int(round(target_ms / max(batch_ms, 1e-3)))))


def _best_ms(fn: Callable[[], None], repeats: int = 5) -> float:
    fn()  # compile, warm caches and the thread pool
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        fn()
        best = min(best, (time.perf_counter_ns() - t0) / 1e6)
    return best


# --- a minimal ONNX (protobuf) writer: field numbers from onnx/onnx.proto ------------------------------

def conv_model_bytes() -> bytes:
    """The "conv" workload as a serialised ONNX ModelProto (IR 8, opset 17).

    x (batch, 16, 32, 32) float32 → [Conv 3x3 → Relu] x 2 → Conv 3x3 → y; fixed seeded weights.
    """
    c, layers = _CONV["channels"], _CONV["layers"]
    rng = np.random.default_rng(1234)
    nodes, inits, prev = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((c, c, 3, 3)) * (1.0 / (3 * np.sqrt(c)))).astype(np.float32)
        inits += [_tensor(f"w{i}", w), _tensor(f"b{i}", np.zeros(c, np.float32))]
        conv_out = f"c{i}" if i < layers - 1 else "y"
        nodes.append(_node("Conv", [prev, f"w{i}", f"b{i}"], [conv_out], f"conv{i}",
                           [_attr_ints("kernel_shape", [3, 3]), _attr_ints("pads", [1, 1, 1, 1])]))
        prev = conv_out
        if i < layers - 1:
            nodes.append(_node("Relu", [conv_out], [f"r{i}"], f"relu{i}", []))
            prev = f"r{i}"
    dims: list[int | str] = ["batch", c, _CONV["size"], _CONV["size"]]
    graph = (b"".join(_msg(1, n) for n in nodes) + _str(2, "edgemed_reference_conv")
             + b"".join(_msg(5, t) for t in inits)
             + _msg(11, _value_info("x", dims)) + _msg(12, _value_info("y", dims)))
    opset = _str(1, "") + _int(2, 17)
    return _int(1, 8) + _str(2, "edgemed") + _msg(7, graph) + _msg(8, opset)


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _msg(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _str(field: int, text: str) -> bytes:
    return _msg(field, text.encode())


def _tensor(name: str, array: np.ndarray) -> bytes:
    # TensorProto: dims = 1, data_type = 2 (FLOAT = 1), name = 8, raw_data = 9 (little-endian).
    dims = b"".join(_int(1, d) for d in array.shape)
    raw = np.ascontiguousarray(array, dtype="<f4").tobytes()
    return dims + _int(2, 1) + _str(8, name) + _msg(9, raw)


def _attr_ints(name: str, values: list[int]) -> bytes:
    # AttributeProto: name = 1, ints = 8, type = 20 (INTS = 7).
    return _str(1, name) + b"".join(_int(8, v) for v in values) + _int(20, 7)


def _node(op: str, inputs: list[str], outputs: list[str], name: str, attrs: list[bytes]) -> bytes:
    # NodeProto: input = 1, output = 2, name = 3, op_type = 4, attribute = 5.
    return (b"".join(_str(1, i) for i in inputs) + b"".join(_str(2, o) for o in outputs) + _str(3, name)
            + _str(4, op) + b"".join(_msg(5, a) for a in attrs))


def _value_info(name: str, dims: list[int | str]) -> bytes:
    # ValueInfoProto{name = 1, type = 2}; TypeProto{tensor_type = 1}; Tensor{elem_type = 1, shape = 2};
    # TensorShapeProto{dim = 1}; Dimension{dim_value = 1 | dim_param = 2}.
    shape = b"".join(_msg(1, _int(1, d) if isinstance(d, int) else _str(2, d)) for d in dims)
    tensor_type = _int(1, 1) + _msg(2, shape)
    return _str(1, name) + _msg(2, _msg(1, tensor_type))

