"""Facts about this machine read from the OS, not measured: SIMD features, memory (stdlib only)."""

from __future__ import annotations

import os

__all__ = ["cpu_features", "memory_mib"]


def cpu_features() -> frozenset[str]:
    """SIMD features of this CPU that matter for inference ("avx2", "avx512f", "avx512_vnni", "amx_int8", "asimddp")."""
    wanted = {"avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8", "amx_bf16", "asimddp", "sve"}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return frozenset(set(line.split(":", 1)[1].split()) & wanted)
    except OSError:
        pass
    return frozenset()


def memory_mib() -> int:
    """Physical memory of this machine in MiB (1024 where the OS does not say)."""
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20)
    except (ValueError, OSError, AttributeError):
        return 1024
