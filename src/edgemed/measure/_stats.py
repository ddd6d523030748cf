"""The gate's statistics: latency normalised by a reference workload, bootstrap bounds on ratios (numpy only).

Each timed repeat is a pair: one call of the candidate and one of the reference workload, run
back to back (in alternating order). Their ratio cancels whatever slowed both down at that
moment — a busier or slower machine, a lower clock — so the normalised samples of two runs on
different days (or machines of one class) can be compared where raw milliseconds cannot.

Two runs are compared by the ratio of a percentile of their normalised samples; a percentile
bootstrap, resampling both runs independently, bounds it. The gate declares a regression only
when the lower bound clears the tolerance, so noise widens the interval instead of failing builds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgemed.errors import InputError

__all__ = ["RatioEstimate", "bootstrap_ratio", "normalise"]

# Resampled values held at once (chunks of resamples keep memory flat for long runs).
_CHUNK_VALUES = 4_000_000


@dataclass(frozen=True)
class RatioEstimate:
    """A ratio of two runs' percentiles with a bootstrap interval.

    Attributes:
        ratio: Point estimate: percentile(candidate) / percentile(baseline).
        low: One-sided lower bound at `confidence` (the (1 - confidence) bootstrap quantile).
        high: One-sided upper bound at `confidence`.
        confidence: E.g. 0.95; [low, high] is then a central 90 % interval.
        percentile: The percentile compared (50 = median).
        resamples: Bootstrap resamples drawn.
    """

    ratio: float
    low: float
    high: float
    confidence: float
    percentile: float
    resamples: int

    def change_percent(self, value: float | None = None) -> float:
        """`value` (default: the point estimate) as a change in percent: 1.15 → +15.0."""
        return 100.0 * ((self.ratio if value is None else value) - 1.0)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"ratio": round(self.ratio, 5), "low": round(self.low, 5), "high": round(self.high, 5),
                "confidence": self.confidence, "percentile": self.percentile, "resamples": self.resamples}


def normalise(candidate_ms: Sequence[float] | np.ndarray, reference_ms: Sequence[float] | np.ndarray) -> np.ndarray:
    """Per-pair ratios candidate / reference of interleaved timings (dimensionless).

    Raises:
        InputError: Different lengths, no samples, or a time that is not positive and finite.
    """
    c = np.asarray(candidate_ms, dtype=np.float64)
    r = np.asarray(reference_ms, dtype=np.float64)
    if c.ndim != 1 or c.shape != r.shape or c.size == 0:
        raise InputError(f"normalising needs two equally long, non-empty series of paired timings; got "
                         f"{c.shape} and {r.shape}. Re-measure (or re-create the baseline with --update-baseline).")
    if not (np.isfinite(c).all() and np.isfinite(r).all() and (c > 0).all() and (r > 0).all()):
        raise InputError("timings must be positive and finite; the samples are damaged — re-measure.")
    return c / r


def bootstrap_ratio(candidate: Sequence[float] | np.ndarray, baseline: Sequence[float] | np.ndarray, *,
                    percentile: float = 50.0, confidence: float = 0.95, resamples: int = 2000,
                    seed: int = 0) -> RatioEstimate:
    """Bound percentile(candidate) / percentile(baseline) by a percentile bootstrap.

    Both samples are resampled with replacement, independently (they come from separate runs),
    `resamples` times; the bounds are the (1 - confidence) and `confidence` quantiles of the
    resampled ratios. Seeded, so the same samples always give the same bounds.

    Args:
        candidate: Normalised samples of the run under test.
        baseline: Normalised samples of the baseline run.
        percentile: Which percentile to compare, 0-100 (50: median, 99: tail).
        confidence: One-sided confidence of each bound, in (0.5, 1).
        resamples: Bootstrap resamples (>= 100).
        seed: The resampling RNG's seed.

    Returns:
        The point estimate with its bounds.

    Raises:
        InputError: An empty sample or a value that is not positive and finite.

    Example:
        >>> est = bootstrap_ratio(candidate_q, baseline_q, confidence=0.95)
        >>> est.low > 1.10      # a regression of more than 10 %, with 95 % confidence
    """
    c, b = _positive(candidate, "candidate"), _positive(baseline, "baseline")
    if not 0.0 <= percentile <= 100.0:
        raise InputError(f"percentile={percentile} must lie in [0, 100].")
    rng = np.random.default_rng(seed)
    ratios = _resampled(c, percentile, resamples, rng) / _resampled(b, percentile, resamples, rng)
    alpha = 1.0 - confidence
    low, high = np.quantile(ratios, [alpha, confidence])
    point = float(np.percentile(c, percentile) / np.percentile(b, percentile))
    return RatioEstimate(ratio=point, low=float(low), high=float(high), confidence=confidence,
                         percentile=percentile, resamples=resamples)


def _positive(values: Sequence[float] | np.ndarray, name: str) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        raise InputError(f"the {name} sample is empty; time at least a few repeats.")
    if not (np.isfinite(x).all() and (x > 0).all()):
        raise InputError(f"the {name} sample holds values that are not positive and finite; re-measure.")
    return x


def _resampled(x: np.ndarray, percentile: float, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """The percentile of `resamples` bootstrap resamples of x."""
    out = np.empty(resamples, dtype=np.float64)
    step = max(1, _CHUNK_VALUES // x.size)
    for start in range(0, resamples, step):
        n = min(step, resamples - start)
        idx = rng.integers(0, x.size, size=(n, x.size))
        out[start:start + n] = np.percentile(x[idx], percentile, axis=1)
    return out
