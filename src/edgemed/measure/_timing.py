"""Measuring on this host: latency percentiles, peak RSS, the matmul FLOP/s ceiling, host facts (stdlib + numpy)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
import time
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Percentiles", "host_facts", "peak_conv_gops", "peak_matmul_gflops", "peak_rss_bytes", "time_interleaved"]


@dataclass(frozen=True)
class Percentiles:
    """Summary of repeated timings, in milliseconds.

    Attributes:
        p50_ms: Median.
        p90_ms: 90th percentile (linear interpolation, so p50 <= p90 <= p99).
        p99_ms: 99th percentile.
        mean_ms: Mean.
        n: Number of timed repeats.
    """

    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    n: int

    @classmethod
    def of_ns(cls, samples_ns: Sequence[int]) -> "Percentiles":
        """Summarise `time.perf_counter_ns` durations (at least one)."""
        ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
        return cls.of_ms(ms)

    @classmethod
    def of_ms(cls, samples_ms: Sequence[float] | np.ndarray) -> "Percentiles":
        """Summarise durations in milliseconds (at least one)."""
        ms = np.asarray(samples_ms, dtype=np.float64)
        p50, p90, p99 = np.percentile(ms, [50, 90, 99])
        return cls(p50_ms=float(p50), p90_ms=float(p90), p99_ms=float(p99), mean_ms=float(ms.mean()), n=int(ms.size))

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (rounded to µs)."""
        return {"p50_ms": round(self.p50_ms, 3), "p90_ms": round(self.p90_ms, 3), "p99_ms": round(self.p99_ms, 3),
                "mean_ms": round(self.mean_ms, 3), "n": self.n}


def peak_rss_bytes() -> int | None:
    """The process's peak resident set size so far (`getrusage` ru_maxrss), or None where unavailable.

    This is a high-water mark since the process started: it includes everything loaded before
    profiling (Python, numpy, the backend) and never goes down.
    """
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS reports bytes, Linux KiB


def peak_matmul_gflops(n: int = 2048, repeats: int = 3) -> float:
    """The host's measured float32 ceiling: the best of `repeats` n x n numpy matmuls, in GFLOP/s.

    numpy's BLAS uses its own thread pool (all cores unless OMP/OPENBLAS_NUM_THREADS say
    otherwise), so this is the whole host's dense-matmul rate, a practical peak.
    """
    rng = np.random.default_rng(0)
    a = rng.random((n, n), dtype=np.float32)
    b = rng.random((n, n), dtype=np.float32)
    out = np.empty((n, n), dtype=np.float32)
    np.matmul(a, b, out=out)  # warm the BLAS thread pool and the caches
    best = float("inf")
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter_ns()
        np.matmul(a, b, out=out)
        best = min(best, (time.perf_counter_ns() - t0) / 1e9)
    return 2.0 * n**3 / max(best, 1e-9) / 1e9


def time_interleaved(sessions: Mapping[Hashable, Any], feed: Mapping[str, np.ndarray], repeats: int, *,
                     warmup: int = 1) -> dict[Hashable, list[float]]:
    """Milliseconds of `repeats` runs of every session on `feed`, interleaved round by round.

    Side-by-side comparisons (FP32 vs INT8, pruned vs unpruned, ORT vs OpenVINO) time each
    candidate once per round, so a noisy neighbour or a clock change hits all of them alike.

    Args:
        sessions: Key → an open `edgemed.runtime.Session` (anything with `run(feed)`).
        feed: The inputs every session runs on.
        repeats: Timed rounds.
        warmup: Untimed rounds first.
    """
    for _ in range(warmup):
        for session in sessions.values():
            session.run(feed)
    times: dict[Hashable, list[float]] = {name: [] for name in sessions}
    for _ in range(repeats):
        for name, session in sessions.items():
            t0 = time.perf_counter_ns()
            session.run(feed)
            times[name].append((time.perf_counter_ns() - t0) / 1e6)
    return times


def peak_conv_gops(backend: str = "openvino", precision: str = "int8", *, channels: int = 256, size: int = 56,
                   repeats: int = 5) -> float:
    """The host's measured convolution ceiling on `backend`, in GOP/s (1 MAC = 2 ops).

    One dense 3x3 convolution, `channels` in and out, on a `size` x `size` map: the kind of layer
    a segmentation network spends its time in, large enough to saturate the cores. For "int8"
    the graph is QDQ (uint8 activations, int8 per-channel weights), which OpenVINO and ONNX
    Runtime run as INT8 kernels (AVX-512 VNNI / AMX / NEON dot products where present); "fp32"
    is the same conv unquantized. The INT8 / FP32 ratio is the speedup INT8 can bring here at best.

    Raises:
        MissingDependencyError: `onnx` (to build the probe graph) or the backend is not installed.
    """
    import tempfile
    from pathlib import Path

    from edgemed._deps import require
    from edgemed.runtime.backends import open_session

    onnx = require("onnx", extra="runtime")
    helper, tp = onnx.helper, onnx.TensorProto
    rng = np.random.default_rng(0)
    c, k = channels, 3
    w = rng.standard_normal((c, c, k, k)).astype(np.float32) * 0.05
    nodes, inits = [], [helper.make_tensor("b", tp.FLOAT, [c], np.zeros(c, np.float32))]
    if precision == "int8":
        w_scale = np.abs(w).reshape(c, -1).max(1) / 127.0
        w_q = np.round(w / w_scale[:, None, None, None]).astype(np.int8)
        inits += [helper.make_tensor("wq", tp.INT8, w.shape, w_q.tobytes(), raw=True),
                  helper.make_tensor("ws", tp.FLOAT, [c], w_scale.astype(np.float32)),
                  helper.make_tensor("wz", tp.INT8, [c], np.zeros(c, np.int8).tobytes(), raw=True),
                  helper.make_tensor("xs", tp.FLOAT, [], [1.0 / 255]),
                  helper.make_tensor("xz", tp.UINT8, [], [0])]
        nodes += [helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
                  helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
                  helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["w"], axis=0),
                  helper.make_node("Conv", ["xd", "w", "b"], ["y"], pads=[1, 1, 1, 1])]
    elif precision == "fp32":
        inits.append(helper.make_tensor("w", tp.FLOAT, w.shape, w.ravel()))
        nodes.append(helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1]))
    else:
        raise ValueError(f"precision={precision!r}; use 'int8' or 'fp32'.")
    graph = helper.make_graph(nodes, "conv_peak", [helper.make_tensor_value_info("x", tp.FLOAT, [1, c, size, size])],
                              [helper.make_tensor_value_info("y", tp.FLOAT, [1, c, size, size])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    x = rng.random((1, c, size, size), dtype=np.float32)
    with tempfile.TemporaryDirectory(prefix="edgemed-peak-") as tmp:
        path = Path(tmp) / "conv.onnx"
        path.write_bytes(model.SerializeToString())
        with open_session(backend, path) as session:
            session.run({"x": x})  # compile, warm caches and thread pool
            best = float("inf")
            for _ in range(max(1, repeats)):
                t0 = time.perf_counter_ns()
                session.run({"x": x})
                best = min(best, (time.perf_counter_ns() - t0) / 1e9)
    return 2.0 * c * c * k * k * size * size / max(best, 1e-9) / 1e9


def host_facts() -> dict[str, Any]:
    """CPU model, core counts, platform, Python and backend versions of this host."""
    from edgemed.runtime import physical_cores

    return {
        "cpu_model": _cpu_model(),
        "logical_cores": os.cpu_count(),
        "physical_cores": physical_cores(),
        "platform": platform.platform(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "onnxruntime": _version("onnxruntime"),
        "openvino": _version("openvino"),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")) and ":" in line:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None
