"""This machine as a target profile: its CPU detected, its peaks and memory bandwidth measured (no torch)."""

from __future__ import annotations

import functools
import os
import platform
import time

import numpy as np

from edgemed.profiles import Accelerator, Precision, TargetProfile, cpu_features, get_profile, memory_mib

__all__ = ["get_target", "host_profile", "measure_memory_bandwidth_gbs"]


def get_target(profile_id: str, user_file: str | os.PathLike[str] | None = None) -> TargetProfile:
    """A target profile by id, where "host" detects and measures this machine (a few seconds, cached).

    Stored profiles come from `edgemed.profiles.get_profile`; "host" is measured here because
    measuring runs a backend, which the data layer does not import.

    Example:
        >>> get_target("host").peak_tops
    """
    if profile_id == "host":
        return host_profile()
    return get_profile(profile_id, user_file)

def measure_memory_bandwidth_gbs(mib: int = 256, repeats: int = 5) -> float:
    """Best copy bandwidth of a `mib` MiB buffer (read + write bytes per second), GB/s."""
    src = np.ones(mib * 2**20 // 4, dtype=np.float32)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter_ns()
        np.copyto(dst, src)
        best = min(best, (time.perf_counter_ns() - t0) / 1e9)
    return 2 * src.nbytes / best / 1e9


@functools.lru_cache(maxsize=1)
def host_profile() -> TargetProfile:
    """This machine's CPU as a profile, with measured (not datasheet) peaks, cached per process.

    FP32 peak: numpy's matmul; INT8 peak: a QDQ 3x3 conv on OpenVINO (ONNX Runtime if OpenVINO is
    missing); bandwidth: a large array copy. Takes a few seconds.
    """
    from edgemed.measure._timing import peak_conv_gops, peak_matmul_gflops

    features = cpu_features()
    peaks = {Precision.FP32: peak_matmul_gflops() / 1e3}
    sources = {"peak_tops.fp32": "measured: numpy float32 matmul 2048^3"}
    int8_backend = None
    for backend in ("openvino", "ort"):
        try:
            peaks[Precision.INT8] = peak_conv_gops(backend, "int8") / 1e3
        except Exception:  # noqa: BLE001  backend or onnx missing: try the next, else no INT8 peak
            continue
        sources["peak_tops.int8"] = f"measured: INT8 (QDQ) 3x3 conv 256ch 56x56 on {backend}"
        int8_backend = backend
        break
    return TargetProfile(
        id="host", name=f"this host: {platform.processor() or platform.machine()} ({os.cpu_count()} CPUs; "
                        f"{', '.join(sorted(features)) or 'no SIMD flags read'})",
        accelerator=Accelerator.CPU, peak_tops=peaks, memory_bandwidth_gbs=round(measure_memory_bandwidth_gbs(), 1),
        memory_mib=memory_mib(), precisions=frozenset(peaks), preferred_backend=int8_backend or "ort",
        sources={**sources, "memory_bandwidth_gbs": "measured: numpy copy of 256 MiB"})
