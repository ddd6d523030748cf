"""edgemed.profiles: hardware targets as data — Jetsons, GPUs, CPUs, your TOML — and OS facts (stdlib only).

This package holds what a target *is* (peaks per precision, memory, bandwidth, DLA, TensorRT
version); it runs nothing. Measuring — this host's peaks, a bundle's latency, latency predicted
from an ONNX graph, the CI gate — lives in `edgemed.measure`, which builds on the runtime.

Example:
    >>> from edgemed.profiles import get_profile, Precision
    >>> orin = get_profile("jetson-orin-nano-8gb")
    >>> Precision.INT8 in orin.precisions
    True
"""

from __future__ import annotations

from edgemed.profiles._host import cpu_features, memory_mib
from edgemed.profiles._targets import (BUILTIN_TARGETS, Accelerator, Precision, TargetProfile, get_profile,
                                       list_profiles, load_profiles_toml)

__all__ = [
    "BUILTIN_TARGETS",
    "Accelerator",
    "Precision",
    "TargetProfile",
    "cpu_features",
    "get_profile",
    "list_profiles",
    "load_profiles_toml",
    "memory_mib",
]
