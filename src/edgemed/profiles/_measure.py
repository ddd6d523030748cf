"""Measuring on this host: latency percentiles, peak RSS, the matmul FLOP/s ceiling, host facts (stdlib + numpy)."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Percentiles", "host_facts", "peak_matmul_gflops", "peak_rss_bytes"]


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
