"""Host facts the runtime needs to pick thread counts (stdlib only)."""

from __future__ import annotations

import os

__all__ = ["physical_cores"]


def physical_cores() -> int:
    """Physical CPU cores this process may run on (SMT siblings counted once).

    Inference threads beyond the physical cores share execution units with their siblings and
    usually make convolution slower, so this, not `os.cpu_count()`, is the default thread count.
    """
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS / Windows have no affinity call
        allowed = os.cpu_count() or 1
    cores = _linux_physical_cores()
    return max(1, min(allowed, cores) if cores else allowed)


def _linux_physical_cores() -> int | None:
    """Distinct (physical id, core id) pairs in /proc/cpuinfo, or None where that file is absent."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            text = fh.read()
    except OSError:
        return None
    pairs = set()
    for block in text.split("\n\n"):
        fields = dict(line.split(":", 1) for line in block.splitlines() if ":" in line)
        fields = {k.strip(): v.strip() for k, v in fields.items()}
        if "core id" in fields:
            pairs.add((fields.get("physical id", "0"), fields["core id"]))
    return len(pairs) or None
