"""Distillation data: scans and teacher outputs on the student grid, held-out blocks, batches."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from edgemed.artifacts import PreprocessSpec
from edgemed.io import SliceGeometry, Volume, context_stack, prepare_volume, to_student_grid

__all__ = ["ScanSlices", "heldout_scans", "holdout_block", "make_batch", "scan_slices"]


@dataclass
class ScanSlices:
    """One scan prepared for training.

    Attributes:
        name: File name of the scan (de-identified).
        volume: The scan on its native grid (for native-grid evaluation).
        image: (Z, H, W) student input intensities.
        soft: (Z, K, H, W) teacher probabilities at the KD temperature.
        hard: (Z, H, W) teacher class index (0 background, i organ i).
        native_mask: (X, Y, Z) teacher class index on the native grid.
        geom: Student-grid geometry.
        train_ks / val_ks: Axial slice indices for training / validation.
    """

    name: str
    volume: Volume
    image: np.ndarray
    soft: np.ndarray
    hard: np.ndarray
    native_mask: np.ndarray
    geom: SliceGeometry
    train_ks: np.ndarray
    val_ks: np.ndarray

    @property
    def organ_ks(self) -> np.ndarray:
        """Slices where the teacher sees any requested organ."""
        return np.flatnonzero(self.native_mask.reshape(-1, self.native_mask.shape[2]).any(axis=0))


def heldout_scans(n_scans: int, fraction: float) -> list[int]:
    """Which scans to hold out whole: the last ceil(fraction * n) in the order given, at least one.

    One scan cannot be held out whole (nothing would be left to train on): [] then, and slices
    of it are held out instead.
    """
    if n_scans < 2 or fraction <= 0:
        return []
    n_val = min(n_scans - 1, max(1, int(np.ceil(fraction * n_scans))))
    return list(range(n_scans - n_val, n_scans))


def holdout_block(organ_ks: np.ndarray, n_slices: int, fraction: float) -> np.ndarray:
    """A contiguous block of slices, `fraction` of the organ-bearing ones, centred on the organ.

    The centre is where the organ is largest and a student can't just copy a neighbour's edge;
    a block (not scattered slices) keeps trained slices from sitting right next to tested ones.
    """
    if fraction <= 0 or organ_ks.size == 0:
        return np.empty(0, dtype=np.int64)
    lo, hi = int(organ_ks.min()), int(organ_ks.max())
    n_val = max(1, int(round(fraction * (hi - lo + 1))))
    start = (lo + hi + 1 - n_val) // 2
    return np.arange(max(0, start), min(n_slices, start + n_val), dtype=np.int64)


def scan_slices(name: str, volume: Volume, probs: np.ndarray, mask: np.ndarray, spec: PreprocessSpec,
                holdout_fraction: float, *, held_out: bool | None = None) -> ScanSlices:
    """Put one scan and its teacher output onto the student grid and split its slices.

    Args:
        held_out: True: the whole scan is validation; False: the whole scan is training; None:
            a central block of `holdout_fraction` of its organ slices is validation.
    """
    image, geom = prepare_volume(volume, spec)
    soft = to_student_grid(probs.astype(np.float32, copy=False), geom, order="linear")
    hard = to_student_grid(mask.astype(np.uint8, copy=False), geom, order="nearest")
    z = volume.shape[2]
    organ_ks = np.flatnonzero(mask.reshape(-1, z).any(axis=0))
    if held_out is None:
        val = holdout_block(organ_ks, z, holdout_fraction)
    else:
        val = np.arange(z, dtype=np.int64) if held_out else np.empty(0, dtype=np.int64)
    train = np.setdiff1d(np.arange(z), val)
    return ScanSlices(name, volume, image, soft, hard, mask, geom, train, val)


def make_batch(scans: Sequence[ScanSlices], picks: Sequence[tuple[int, int]], context: int,
               num_classes: int, *, rng: np.random.Generator | None = None,
               truncate_prob: float = 0.0, flat_prob: float = 0.0,
               keep: slice = slice(None)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Inputs (N, C, H, W), soft targets (N, K, H, W) and one-hot targets for (scan, slice) picks.

    Slices of different scans are padded to the largest H and W (air / background). With
    `truncate_prob`, a slice's 2.5D context is cut short on each side by a random number of
    neighbours, which repeat the last one kept: what the runtime feeds at a scan's first and last
    slices, and for every slice of a scan only a few slices thick. With `flat_prob`, the whole context
    is the slice itself (a scan one slice or a few thin slices thick).

    `keep` (a distributed process's share of a global batch, e.g. slice(rank, None, world)) builds
    only those picks, yet pads to and draws from `rng` for all of them, so each process's share is
    exactly what a single process would have built for the same picks.
    """
    h = max(scans[s].image.shape[1] for s, _ in picks)
    w = max(scans[s].image.shape[2] for s, _ in picks)
    mine = set(range(len(picks))[keep])
    n = len(mine)
    x = np.zeros((n, 2 * context + 1, h, w), np.float32)
    soft = np.zeros((n, num_classes, h, w), np.float32)
    soft[:, 0] = 1.0
    hard = np.zeros((n, num_classes, h, w), np.float32)
    hard[:, 0] = 1.0
    i = -1
    for j, (s, k) in enumerate(picks):
        cut = None
        if context and rng is not None and flat_prob > 0 and rng.random() < flat_prob:
            cut = context, context
        elif context and rng is not None and truncate_prob > 0 and rng.random() < truncate_prob:
            cut = context - int(rng.integers(0, context + 1)), context + int(rng.integers(0, context + 1))
        if j not in mine:
            continue
        i += 1
        sc = scans[s]
        hh, ww = sc.image.shape[1:]
        x[i, :, :hh, :ww] = context_stack(sc.image, [k], context, step=sc.geom.context_step)[0]
        if cut is not None:
            below, above = cut
            x[i, :below] = x[i, below]
            x[i, above + 1:] = x[i, above]
        soft[i, :, :hh, :ww] = sc.soft[k]
        hard[i, :, :hh, :ww] = np.eye(num_classes, dtype=np.float32)[sc.hard[k]].transpose(2, 0, 1)
    return x, soft, hard
