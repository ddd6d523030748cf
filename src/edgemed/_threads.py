"""How many CPU threads a job should use: the CPUs this process may run on, minus the busy ones (stdlib only).

A parallel region (a torch convolution, an ONNX Runtime or OpenVINO kernel) is as slow as its slowest
thread. On a machine where another program keeps a core busy, a thread placed on that core gets half
of it, and every other thread waits for it at each barrier, spinning: on a 2-core machine beside one
busy process, 2 spinning torch threads distilled 2.3x slower per epoch than idle, 1 thread 1.4x
(benchmarks/results/busy_machine.json; 6-epoch runs measured 8.8x vs 1.7x). So a long job asks, once
at its start, how many of its CPUs are free and uses that many threads.

    usable_cpus()                 # affinity mask, capped by the cgroup CPU quota (containers)
    free_cpus()                   # usable minus the load of other programs, sampled over ~0.2 s
    job_threads(requested)        # the count to use: requested > $EDGEMED_THREADS > free_cpus()

Precedence of the thread count: an explicit `threads` argument (`--threads`, a config field) wins, then
the environment variable `EDGEMED_THREADS`, then the free CPUs measured now. `EDGEMED_THREADS=legacy`
restores the behaviour before this module (every usable CPU, no measurement) for comparisons.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

from edgemed.errors import ConfigError

__all__ = ["ENV", "LEGACY", "free_cpus", "job_threads", "legacy_requested", "runnable_tasks", "usable_cpus"]

#: Environment variable that overrides the measured thread count (an integer >= 1, or "legacy").
ENV = "EDGEMED_THREADS"
#: Value of EDGEMED_THREADS that restores the old behaviour (all usable CPUs, spin-waiting libraries).
LEGACY = "legacy"


def legacy_requested(environ: dict[str, str] | None = None) -> bool:
    """Whether `EDGEMED_THREADS=legacy` asks for the old thread settings."""
    return (os.environ if environ is None else environ).get(ENV, "").strip().lower() == LEGACY


def _affinity_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS / Windows have no affinity call
        return os.cpu_count() or 1


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="ascii", errors="replace").strip()
    except OSError:
        return None


def cgroup_cpu_limit(root: Path = Path("/sys/fs/cgroup"), proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """CPUs the cgroup quota allows this process (cgroup v2 cpu.max, or v1 cfs_quota/period); None: no quota.

    Only the process's own cgroup is read (the path /proc/self/cgroup names, falling back to `root`
    itself, which is what a container sees).
    """
    own_v2, own_v1 = "", ""
    text = _read(proc_cgroup) or ""
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if parts[0] == "0" and parts[1] == "":
            own_v2 = parts[2].lstrip("/")
        elif "cpu" in parts[1].split(","):
            own_v1 = parts[2].lstrip("/")
    # cgroup v2: "max 100000" (no limit) or "200000 100000" (2 CPUs).
    for folder in dict.fromkeys((root / own_v2, root)):
        raw = _read(folder / "cpu.max")
        if raw is not None:
            fields = raw.split()
            if len(fields) >= 1 and fields[0] != "max":
                try:
                    quota, period = int(fields[0]), int(fields[1]) if len(fields) > 1 else 100_000
                except ValueError:
                    return None
                return quota / period if quota > 0 and period > 0 else None
            return None
    # cgroup v1: cpu.cfs_quota_us (-1: no limit) over cpu.cfs_period_us.
    for base in (root / "cpu,cpuacct", root / "cpu"):
        for folder in dict.fromkeys((base / own_v1, base)):
            quota_s, period_s = _read(folder / "cpu.cfs_quota_us"), _read(folder / "cpu.cfs_period_us")
            if quota_s is None or period_s is None:
                continue
            try:
                quota, period = int(quota_s), int(period_s)
            except ValueError:
                return None
            return quota / period if quota > 0 and period > 0 else None
    return None


def usable_cpus() -> int:
    """CPUs this process may really use: its affinity mask, capped by the cgroup CPU quota (rounded up)."""
    cpus = _affinity_cpus()
    limit = cgroup_cpu_limit()
    if limit is not None:
        cpus = min(cpus, max(1, math.ceil(limit - 1e-6)))
    return max(1, cpus)


def _stat_times(stat: Path) -> tuple[int, int] | None:
    """(idle + iowait, total) jiffies summed over all CPUs from /proc/stat; None where it is absent."""
    text = _read(stat)
    if not text or not text.startswith("cpu "):
        return None
    fields = [int(x) for x in text.splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return idle, sum(fields[:8])  # guest time is already counted in user


_PROC_STAT = Path("/proc/stat")
#: A sample is reused for this long, so a CLI start, a training job and the sessions a command opens
#: together (quantize times three side by side) share one 0.2 s measurement instead of sleeping each.
_REUSE_S = 2.0
_last_sample: tuple[float, float | None] | None = None  # (monotonic time taken, busy CPUs)


def busy_cpus(sample_s: float = 0.2, stat: Path = _PROC_STAT) -> float | None:
    """CPUs kept busy over the next `sample_s` seconds, whole machine (/proc/stat), else the 1-min load average.

    This process sleeps while sampling, so the figure is other programs' load. None: nothing to read.
    A sample of /proc/stat taken less than 2 s ago is reused.
    """
    global _last_sample
    cached = _last_sample
    if stat == _PROC_STAT and cached is not None and time.monotonic() - cached[0] < _REUSE_S:
        return cached[1]
    busy = _sample_busy(sample_s, stat)
    if stat == _PROC_STAT:
        _last_sample = (time.monotonic(), busy)
    return busy


def _sample_busy(sample_s: float, stat: Path) -> float | None:
    first = _stat_times(stat)
    if first is not None:
        time.sleep(sample_s)
        second = _stat_times(stat)
        if second is not None and second[1] > first[1]:
            ncpu = os.cpu_count() or 1
            busy_share = 1.0 - (second[0] - first[0]) / (second[1] - first[1])
            return max(0.0, busy_share * ncpu)
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def runnable_tasks(stat: Path = _PROC_STAT) -> int | None:
    """Tasks (threads) runnable on the whole machine right now, the caller included (/proc/stat
    `procs_running`); None where it cannot be read. Sampled between timed calls, it shows whether
    other programs competed for the CPUs while something was being measured."""
    text = _read(stat)
    if not text:
        return None
    for line in text.splitlines():
        if line.startswith("procs_running "):
            try:
                return int(line.split()[1])
            except (IndexError, ValueError):
                return None
    return None


def free_cpus(usable: int | None = None, busy: float | None = None, *, sample_s: float = 0.2) -> int:
    """Usable CPUs not kept busy by other programs now (at least 1).

    A CPU counts as busy from a half: 0.4 CPUs of background noise leaves all CPUs free, one busy process
    takes one away. Busy CPUs of the whole machine are taken off this process's usable ones, which
    assumes other programs run on the same CPUs (true on small machines, cautious on big ones).
    """
    usable = usable_cpus() if usable is None else usable
    busy = busy_cpus(sample_s) if busy is None else busy
    if busy is None:
        return usable
    return max(1, min(usable, usable - int(busy + 0.5)))


def _parse(value: object, origin: str) -> int:
    try:
        n = int(str(value).strip())
    except ValueError:
        raise ConfigError(f"{origin}={value!r} is not a thread count; give an integer >= 1 "
                          f"(or {ENV}={LEGACY} for the old settings).") from None
    if n < 1:
        raise ConfigError(f"{origin}={n} must be >= 1.")
    return n


def job_threads(requested: int | None = None, *, environ: dict[str, str] | None = None,
                measure: bool = True, sample_s: float = 0.2) -> int:
    """Threads for one long job (a distillation, a `segment` call): explicit > $EDGEMED_THREADS > free CPUs.

    Args:
        requested: An explicit count (`--threads`, a config field); wins over everything.
        environ: The environment to read EDGEMED_THREADS from (default os.environ).
        measure: Sample other programs' load (~`sample_s` s) and leave their CPUs alone; False: every
            usable CPU.
        sample_s: How long to sample /proc/stat.

    Raises:
        ConfigError: `requested` or EDGEMED_THREADS is not an integer >= 1 (or "legacy").
    """
    if requested is not None:
        return _parse(requested, "threads")
    env = (os.environ if environ is None else environ).get(ENV, "").strip()
    if env and env.lower() != LEGACY:
        return _parse(env, ENV)
    if env.lower() == LEGACY or not measure:
        return usable_cpus()
    return free_cpus(sample_s=sample_s)
