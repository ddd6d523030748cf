"""`GateConfig`: how the regression gate measures and what it calls a regression (stdlib only)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from edgemed.errors import ConfigError

__all__ = ["CLOCKS", "FAST", "WORKLOADS", "GateConfig"]

#: Reference workloads: "conv" (a fixed tiny conv net on the bundle's own backend), "matmul" (a
#: fixed numpy float32 matmul) or "auto" ("conv" on ONNX backends, "matmul" on the others).
WORKLOADS = ("auto", "conv", "matmul")

#: Clocks the gate can compare on (see `GateConfig.clock`).
CLOCKS = ("auto", "cpu", "wall")

#: What `--fast` changes: fewer interleaved repeats and bootstrap resamples (a CI smoke run).
FAST: Mapping[str, Any] = {"repeats": 15, "warmup": 1, "resamples": 1000}


@dataclass(frozen=True, slots=True, kw_only=True)
class GateConfig:
    """How `measure` times a bundle and how `compare` judges it against a baseline.

    Latency is the time of `Segmenter.segment` on one scan (preprocess + inference + postprocess),
    each call paired with a call of a fixed reference workload on the same backend; the gate
    compares the per-pair ratios (candidate / reference), so a machine that is uniformly slower
    or busier does not look like a slower model.

    Attributes:
        backend: "auto", "ort", "openvino", ... With a baseline, "auto" means the baseline's backend.
        threads: Backend threads. 1 (default) times the model single-threaded, where the reference
            workload tracks machine load most faithfully; None: the physical cores. With a
            baseline, the baseline's count is used and a different explicit one is refused.
        repeats: Interleaved (candidate, reference) pairs timed.
        warmup: Untimed pairs before them.
        workload: The reference workload, one of `WORKLOADS`.
        clock: What the gate compares: "cpu" (process CPU time, immune to a time-shared
            machine's waits), "wall", or "auto": "cpu" with one thread on a CPU backend, else
            "wall" (GPU work and idle thread pools are not CPU time). Latency is always also
            reported as wall-clock percentiles.
        confidence: One-sided confidence of the bootstrap bound a regression must clear.
        resamples: Bootstrap resamples.
        latency_tolerance: Allowed slowdown of the normalised p50 (0.10 = +10 %); a regression is
            declared only when the bootstrap lower bound of the ratio exceeds 1 + this.
        p99_tolerance: The same for the normalised p99; None reports p99 without gating it
            (a tail percentile of a few dozen runs on a shared machine measures the machine).
        memory_tolerance: Allowed relative growth of the peak memory the bundle adds.
        memory_slack_mib: Growth below this many MiB is never a regression (allocator noise).
        dice_tolerance_points: Allowed Dice drop per organ, in points (0.5 = 0.005 Dice).
        seed: Seed of the bootstrap (the same samples always give the same verdict).
        idle_headroom: Of the CPUs the measurement leaves free (usable CPUs - threads), this many
            must stay unused by other programs, on average over the timed pairs (other runnable
            tasks are read from /proc/stat before each pair; at least 0.25 is always tolerated).
            Otherwise the machine was too busy for latency to be trusted: the latency rows say
            "busy" and the verdict is "inconclusive" (exit 3) instead of pass or fail; memory and
            Dice are still judged. With one thread on 2 CPUs, one other busy process is too many:
            measured, it made a 14 %-slower model look 10 % slower (`gate_study.py --busy 1`).
            None: judge latency however busy the machine was.

    Example:
        >>> config = GateConfig(latency_tolerance=0.15, repeats=60)
    """

    backend: str = "auto"
    threads: int | None = 1
    repeats: int = 40
    warmup: int = 3
    workload: str = "auto"
    clock: str = "auto"
    confidence: float = 0.95
    resamples: int = 2000
    latency_tolerance: float = 0.10
    p99_tolerance: float | None = None
    memory_tolerance: float = 0.20
    memory_slack_mib: float = 8.0
    dice_tolerance_points: float = 0.5
    seed: int = 0
    idle_headroom: float | None = 0.5

    def __post_init__(self) -> None:
        if self.threads is not None and (isinstance(self.threads, bool) or self.threads < 1):
            raise ConfigError(f"threads={self.threads!r} must be >= 1, or None for the physical cores.")
        if self.repeats < 5:
            raise ConfigError(f"repeats={self.repeats} is too few for a confidence interval; use at least 5 "
                              "(the default is 40, --fast uses 15).")
        if self.warmup < 0:
            raise ConfigError(f"warmup={self.warmup} must be >= 0.")
        if self.workload not in WORKLOADS:
            raise ConfigError(f"workload={self.workload!r}; choose one of: {', '.join(WORKLOADS)}.")
        if self.clock not in CLOCKS:
            raise ConfigError(f"clock={self.clock!r}; choose one of: {', '.join(CLOCKS)}.")
        if not 0.5 < self.confidence < 1.0:
            raise ConfigError(f"confidence={self.confidence} must lie between 0.5 and 1, e.g. 0.95.")
        if self.resamples < 100:
            raise ConfigError(f"resamples={self.resamples} is too few; use at least 100 (default 2000).")
        for name in ("latency_tolerance", "memory_tolerance", "memory_slack_mib", "dice_tolerance_points"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be >= 0.")
        if self.idle_headroom is not None and self.idle_headroom < 0:
            raise ConfigError(f"idle_headroom={self.idle_headroom} must be >= 0, or None to judge latency on a busy machine.")
        if self.p99_tolerance is not None and self.p99_tolerance < 0:
            raise ConfigError(f"p99_tolerance={self.p99_tolerance} must be >= 0, or None to report p99 only.")
        if self.latency_tolerance > 10:
            raise ConfigError(f"latency_tolerance={self.latency_tolerance} is a fraction (0.10 = +10 %), "
                              "not a percentage.")

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> "GateConfig":
        """Build from a dict of field names (TOML, JSON), suggesting the field a typo meant.

        Raises:
            ConfigError: An unknown key or a bad value.
        """
        known = [f.name for f in fields(cls)]
        for key in raw:
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" Did you mean {close[0]!r}?" if close else ""
                raise ConfigError(f"unknown gate setting {key!r}.{hint} Known: {', '.join(known)}.")
        return cls(**dict(raw))

    def with_fast(self) -> "GateConfig":
        """This config with `FAST`'s repeats, warmup and resamples (for CI smoke runs)."""
        return replace(self, **FAST)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return {f.name: getattr(self, f.name) for f in fields(self)}
