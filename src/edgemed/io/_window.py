"""Intensity scaling into [0, 1]: HU windows for CT, robust percentiles for MR."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgemed.errors import ConfigError

__all__ = ["normalize_mr", "scale_to_unit", "window_hu"]


def window_hu(array: np.ndarray, window_hu: Sequence[float]) -> np.ndarray:
    """Clip CT values to a HU window and scale it linearly to [0, 1].

    Args:
        array: Values in Hounsfield units.
        window_hu: (low, high) in HU, e.g. (-160, 240) for an abdominal soft-tissue window.

    Returns:
        float32 array of the same shape: 0 at or below `low`, 1 at or above `high`.

    Raises:
        ConfigError: If the window is not two finite numbers with low < high.

    Example:
        >>> x = window_hu(read_volume("ct.nii.gz").array, window_hu=(-160, 240))
    """
    low, high = _pair(window_hu, "window_hu")
    out = np.clip(np.asarray(array, dtype=np.float32), low, high)
    out -= np.float32(low)
    out *= np.float32(1.0 / (high - low))
    return out


def normalize_mr(array: np.ndarray, *, percentiles: Sequence[float] = (0.5, 99.5)) -> np.ndarray:
    """Scale MR intensities robustly to [0, 1] between two percentiles of the volume.

    MR has no absolute scale, so the percentiles stand in for a window: values at or below the
    low percentile become 0, at or above the high percentile 1. A constant image becomes all 0.

    Args:
        array: MR intensities (any real dtype).
        percentiles: (low, high) percentiles in [0, 100].

    Returns:
        float32 array of the same shape in [0, 1].

    Raises:
        ConfigError: If the percentiles are not 0 <= low < high <= 100.
    """
    low_pct, high_pct = _pair(percentiles, "percentiles")
    if not 0.0 <= low_pct < high_pct <= 100.0:
        raise ConfigError(f"percentiles={tuple(percentiles)} must satisfy 0 <= low < high <= 100, e.g. (0.5, 99.5).")
    values = np.asarray(array, dtype=np.float32)
    low, high = (float(v) for v in np.percentile(values, [low_pct, high_pct]))
    return scale_to_unit(values, low, high)


def scale_to_unit(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """`values` clipped to [low, high] and scaled to [0, 1] (float32; all zeros when high <= low)."""
    if high <= low:
        return np.zeros(values.shape, dtype=np.float32)
    out = np.clip(values, low, high)
    out -= np.float32(low)
    out *= np.float32(1.0 / (high - low))
    return out


def _pair(values: Sequence[float], name: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{name}={values!r} must be two numbers (low, high), e.g. (-160, 240).") from err
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise ConfigError(f"{name}=({low:g}, {high:g}) must be finite with low < high; swap or fix the bounds.")
    return low, high
