"""The runtime QC's confidence statistics and Dice estimator (numpy only).

`ConfidenceStats` sums, slab by slab inside the one inference loop, what the student's own
probabilities say about each organ's mask; `fit_score_model` (at distill time) and
`apply_score_model` (at run time) turn those sums into an estimated Dice.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["SCORE_FEATURES", "ConfidenceStats", "apply_score_model", "fit_score_model", "score_features", "spearman"]

#: The confidence features the Dice estimator uses, in order.
SCORE_FEATURES = ("logit_expected_dice", "logit_boundary_confidence", "entropy_inside")
#: The sign each feature's weight must have (monotone estimator).
_FEATURE_SIGNS = (1.0, 1.0, -1.0)


class ConfidenceStats:
    """Per-organ confidence sums over the student-grid probabilities, one slab at a time.

    Feed it every slab's (n, K, H, W) softmax probabilities (`observe`, which `infer_volume` calls
    when given `observe=`); read the per-organ features with `features(channel)`. Memory: a few
    floats per class; time: a few elementwise passes per slab.
    """

    def __init__(self) -> None:
        self._sums: np.ndarray | None = None   # per class: area, Σp inside, Σp all, Σmaxp inside, Σentropy inside,
        self.seconds = 0.0                     # boundary pixels, Σmaxp at boundary

    def observe(self, values: np.ndarray, *, logits: bool = False) -> None:
        """Add one slab (n, K, H, W) float32: softmax probabilities, or the logits (`logits=True`).

        Given logits, only the mask's own voxels and every other pixel (2 x 2 stride in-plane, for
        the organ's total probability) are turned into probabilities, not the slab.
        """
        import time

        t0 = time.perf_counter()
        k = values.shape[1]
        if self._sums is None:
            self._sums = np.zeros((k, 7), dtype=np.float64)
        # K - 1 elementwise passes: numpy's argmax over a middle axis is several times slower.
        arg = _argmax_channels([values[:, c] for c in range(k)])
        log_k = math.log(k)
        if logits:
            # Each organ's total probability from every other pixel: a quarter of the exps, scaled back.
            sub = values[:, :, ::2, ::2]
            e = np.exp(sub - sub.max(1, keepdims=True))
            e /= e.sum(1, keepdims=True)
            totals = e.sum(axis=(0, 2, 3), dtype=np.float64) * (values[:, 0].size / e[:, 0].size)
        else:
            totals = values.sum(axis=(0, 2, 3), dtype=np.float64)
        # Every organ's voxels in one gather: (m, K) rows, their class, max probability and entropy.
        where = np.nonzero(arg)
        self._sums[1:, 2] += totals[1:]
        if not where[0].size:
            self.seconds += time.perf_counter() - t0
            return
        cls = arg[where]
        rows = values[where[0], :, where[1], where[2]]
        if logits:
            rows = np.exp(rows - rows.max(1, keepdims=True))
            rows /= rows.sum(1, keepdims=True)
        maxp = rows.max(1)
        ent = -(rows * np.log(np.maximum(rows, 1e-6))).sum(1) / log_k
        own = rows[np.arange(rows.shape[0]), cls]
        self._sums[:, 0] += np.bincount(cls, minlength=k)
        self._sums[:, 1] += np.bincount(cls, weights=own, minlength=k)
        self._sums[:, 3] += np.bincount(cls, weights=maxp, minlength=k)
        self._sums[:, 4] += np.bincount(cls, weights=ent, minlength=k)
        for c in np.unique(cls):
            pick = np.flatnonzero(cls == c)
            zc, hc, wc = where[0][pick], where[1][pick], where[2][pick]
            # The boundary on the mask's own bounding box, not the slab.
            z0, z1 = int(zc.min()), int(zc.max()) + 1
            h0, h1 = max(0, int(hc.min()) - 1), int(hc.max()) + 2
            w0, w1 = max(0, int(wc.min()) - 1), int(wc.max()) + 2
            box = arg[z0:z1, h0:h1, w0:w1] == c
            edge_box = box & ~_erode_inplane(box)
            edge = edge_box[zc - z0, hc - h0, wc - w0]
            self._sums[c, 5] += int(np.count_nonzero(edge))
            self._sums[c, 6] += float(maxp[pick][edge].sum(dtype=np.float64))
        self.seconds += time.perf_counter() - t0

    def features(self, channel: int) -> dict[str, float]:
        """Organ `channel`'s confidence features (empty when it was never predicted)."""
        if self._sums is None or self._sums[channel][0] == 0:
            return {"expected_dice": 0.0}
        area, p_in, p_all, maxp_in, ent_in, edge, maxp_edge = self._sums[channel]
        return {"expected_dice": 2.0 * p_in / (p_all + area), "mean_max_probability": maxp_in / area,
                "entropy_inside": ent_in / area, "boundary_confidence": maxp_edge / edge if edge else maxp_in / area}


def _argmax_channels(channels: list[np.ndarray]) -> np.ndarray:
    """np.argmax over equally shaped arrays (first index on ties), without stacking them."""
    from edgemed.runtime._infer import _argmax

    return _argmax(channels)


def _erode_inplane(mask: np.ndarray) -> np.ndarray:
    """4-neighbour erosion of (n, H, W) masks in-plane (the image border counts as outside)."""
    out = mask.copy()
    out[:, 1:, :] &= mask[:, :-1, :]
    out[:, :-1, :] &= mask[:, 1:, :]
    out[:, :, 1:] &= mask[:, :, :-1]
    out[:, :, :-1] &= mask[:, :, 1:]
    out[:, 0, :] = out[:, -1, :] = False
    out[:, :, 0] = out[:, :, -1] = False
    return out


def score_features(confidence: Mapping[str, float]) -> np.ndarray | None:
    """The Dice estimator's inputs (SCORE_FEATURES order) from `ConfidenceStats.features`, or None (nothing found)."""
    if "mean_max_probability" not in confidence:
        return None
    return np.array([_logit(confidence["expected_dice"]), _logit(confidence["boundary_confidence"]),
                     confidence["entropy_inside"]], dtype=np.float64)


def fit_score_model(features: np.ndarray, dice: np.ndarray, *, ridge: float = 0.05) -> dict[str, Any]:
    """Fit the Dice estimator: logit(Dice) ≈ intercept + weights · features (ridge least squares).

    Args:
        features: (n, len(SCORE_FEATURES)) rows of `score_features`.
        dice: (n,) measured Dice vs the teacher.
        ridge: L2 penalty on the weights (standardised features): few samples, so keep it small and stable.

    Returns:
        The record's `score` block: features, weights, intercept, and the fit's rmse and Spearman rho.
    """
    x = np.asarray(features, dtype=np.float64)
    y = _logit(np.clip(np.asarray(dice, dtype=np.float64), 0.02, 0.995))
    mu, sd = x.mean(0), x.std(0) + 1e-6
    z = (x - mu) / sd
    # Monotone: more expected Dice or boundary confidence never lowers the score, more entropy never
    # raises it. A feature whose fitted weight has the wrong sign (collinear features, few samples) is dropped.
    signs = np.array(_FEATURE_SIGNS[: z.shape[1]])
    active = np.ones(z.shape[1], dtype=bool)
    beta = np.zeros(z.shape[1] + 1)
    for _ in range(z.shape[1]):
        a = np.hstack([np.ones((len(z), 1)), z[:, active]])
        penalty = ridge * len(z) * np.diag([0.0] + [1.0] * int(active.sum()))
        solved = np.linalg.solve(a.T @ a + penalty, a.T @ y)
        beta = np.zeros(z.shape[1] + 1)
        beta[0] = solved[0]
        beta[1:][active] = solved[1:]
        wrong = active & (beta[1:] * signs < 0)
        if not wrong.any():
            break
        active &= ~wrong
    weights = beta[1:] / sd
    intercept = float(beta[0] - (beta[1:] * mu / sd).sum())
    model = {"features": list(SCORE_FEATURES), "weights": [float(w) for w in weights], "intercept": intercept}
    pred = np.array([apply_score_model(model, row) for row in x])
    model["fit"] = {"samples": int(len(x)), "rmse": float(np.sqrt(np.mean((pred - np.asarray(dice)) ** 2))),
                    "spearman": spearman(pred, np.asarray(dice))}
    return model


def apply_score_model(model: Mapping[str, Any], features: np.ndarray) -> float:
    """Estimated Dice for one organ's `score_features`."""
    z = float(model["intercept"]) + float(np.dot(np.asarray(model["weights"], dtype=np.float64), features))
    return float(1.0 / (1.0 + math.exp(-max(-30.0, min(30.0, z)))))


def spearman(a: np.ndarray, b: np.ndarray) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None for fewer than 3 values or a constant side."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 3:
        return None
    ra, rb = _ranks(a), _ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return None
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="mergesort")
    ranks = np.empty(len(v), dtype=np.float64)
    ranks[order] = np.arange(len(v), dtype=np.float64)
    for value in np.unique(v):  # ties share their mean rank
        tie = v == value
        if tie.sum() > 1:
            ranks[tie] = ranks[tie].mean()
    return ranks


def _logit(p: Any) -> Any:
    p = np.clip(p, 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p))
