"""Host facts the runtime needs to pick thread counts (stdlib only)."""

from __future__ import annotations

import os

from edgemed._threads import ENV, busy_cpus, free_cpus, job_threads, legacy_requested, usable_cpus

__all__ = ["physical_cores", "session_threads"]


def session_threads(requested: int | None = None) -> tuple[int, bool]:
    """(threads, whether idle workers may spin) for one backend session, decided when it opens.

    Threads: `requested`, else $EDGEMED_THREADS, else the physical cores that are free now (~0.2 s of
    /proc/stat; edgemed._threads): threads put on CPUs that other programs keep busy stall each kernel.
    Spinning: only on an idle machine, where it saves a few percent; on a busy one a spinning worker
    takes a CPU another program needs. Both are per-session options (ORT SessionOptions, OpenVINO
    compile config), never process-wide settings. EDGEMED_THREADS=legacy: all physical cores, spinning.
    """
    if legacy_requested():
        return (job_threads(requested) if requested is not None else physical_cores()), True
    env_set = bool(os.environ.get(ENV, "").strip())
    if requested is not None or env_set:
        threads = job_threads(requested)
        return threads, threads > 1 and free_cpus() >= usable_cpus()
    usable = min(usable_cpus(), physical_cores())
    busy = busy_cpus()
    if busy is not None and busy + 0.5 >= usable:
        # No CPU is free: the scheduler shares them all fairly, so fewer threads only get a smaller share
        # (ORT beside 2 busy processes on 2 cores: 2 sleeping-when-idle threads 2.15 s/volume, 1 thread
        # 2.82 s; benchmarks/suite/busy_machine.py). Keep every core, never spin.
        return usable, False
    free = free_cpus(usable, busy)
    return free, free >= usable


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
