"""The shared torch/ONNX teacher pipeline: normalise, resample, run by slices or patches, resample back.

A backend supplies only ``run_batch``: float32 (N, 1, *spatial) in → (N, C, *spatial) out, numpy on
both sides, so torch, TorchScript and ONNX teachers give the same scores for the same network.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from edgemed.errors import BackendError, ConfigError
from edgemed.io import resample_array, resample_to_spacing, window_hu
from edgemed.models.teachers._config import TeacherInputConfig
from edgemed.models.teachers._output import TeacherOutput

if TYPE_CHECKING:
    from edgemed.io import Volume

__all__ = ["RunBatch", "normalise", "run_pipeline"]

RunBatch = Callable[[np.ndarray], np.ndarray]


def run_pipeline(volume: Volume, config: TeacherInputConfig, run_batch: RunBatch, *, name: str) -> TeacherOutput:
    """Run a network over `volume` as `config` says and return its scores on the volume's grid.

    Raises:
        ConfigError: The network's channel count does not match `config.class_ids`.
        BackendError: The network's output is not a dense map of its input's size.
    """
    grid = volume.shape
    if config.spacing_mm is not None:
        volume = resample_to_spacing(volume, config.spacing_mm, order="linear")
    image = normalise(volume.array, config)
    run = _Checked(run_batch, config.class_ids, name)
    scores = _run_slices(image, config, run) if config.dims == 2 else _run_volume(image, config, run)
    if scores.shape[1:] != grid:
        # Same half-voxel convention as resample_to_spacing, so this lands back on the scan's grid.
        # Scores are smooth: interpolate them linearly, and take the argmax only afterwards.
        scores = resample_array(scores, (None, *grid), order="linear")
    class_ids = config.class_ids or tuple(range(scores.shape[0]))
    return TeacherOutput(class_ids=class_ids, kind=config.output_kind, scores=scores)


def normalise(image_hu: np.ndarray, config: TeacherInputConfig) -> np.ndarray:
    """HU → network input: window min-max to [0, 1], or z-score, as `config` says (float32)."""
    if config.window_hu is not None:
        return window_hu(image_hu, window_hu=config.window_hu)
    assert config.zscore is not None
    mean, std = config.zscore
    return ((image_hu - np.float32(mean)) / np.float32(std)).astype(np.float32)


class _Checked:
    """Wraps run_batch: checks the first output's shape and channel count, then gets out of the way."""

    def __init__(self, run_batch: RunBatch, class_ids: tuple[int, ...] | None, name: str) -> None:
        self._run, self._ids, self._name, self._checked = run_batch, class_ids, name, False

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        out = np.asarray(self._run(np.ascontiguousarray(batch, dtype=np.float32)), dtype=np.float32)
        if not self._checked:
            if out.ndim != batch.ndim or out.shape[0] != batch.shape[0] or out.shape[2:] != batch.shape[2:]:
                raise BackendError(
                    f"{self._name}: input {batch.shape} gave output {out.shape}; a teacher must return dense "
                    "scores (N, C, *spatial) of its input's size. Check TeacherInputConfig.dims."
                )
            if self._ids is not None and out.shape[1] != len(self._ids):
                raise ConfigError(
                    f"{self._name} gives {out.shape[1]} output channels but class_ids has {len(self._ids)} "
                    f"entries {self._ids}; set class_ids to one label id per channel."
                )
            self._checked = True
        return out


def _pad_end(image: np.ndarray, target: tuple[int, ...]) -> np.ndarray:
    """Pad the trailing axes of `image` at their far ends up to `target`, with the image's minimum
    (air for CT, background for MR), the least surprising thing for a network to see beyond a scan."""
    lead = image.ndim - len(target)
    pads = [(0, 0)] * lead + [(0, max(0, t - n)) for n, t in zip(image.shape[lead:], target)]
    if all(p == (0, 0) for p in pads):
        return image
    return np.pad(image, pads, mode="constant", constant_values=float(image.min()))


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def _run_slices(image: np.ndarray, config: TeacherInputConfig, run: _Checked) -> np.ndarray:
    x, y, z = image.shape
    m = config.size_multiple
    padded = _pad_end(image, (_round_up(x, m), _round_up(y, m)) + (z,)) if m > 1 else image
    # Axial slice k is array[:, :, k]; the network sees it as (1, X, Y).
    slices = np.moveaxis(padded, 2, 0)[:, None]
    out: np.ndarray | None = None
    for start in range(0, z, config.batch_size):
        pred = run(slices[start : start + config.batch_size])
        if out is None:
            out = np.empty((pred.shape[1], *padded.shape), dtype=np.float32)
        out[..., start : start + pred.shape[0]] = np.moveaxis(pred, 0, -1)
    assert out is not None
    return out[:, :x, :y, :]


def _run_volume(image: np.ndarray, config: TeacherInputConfig, run: _Checked) -> np.ndarray:
    shape = image.shape
    if config.patch_size is None:
        m = config.size_multiple
        padded = _pad_end(image, tuple(_round_up(n, m) for n in shape))
        pred = run(padded[None, None])[0]
        return pred[:, : shape[0], : shape[1], : shape[2]]
    patch = config.patch_size
    padded = _pad_end(image, tuple(max(n, p) for n, p in zip(shape, patch)))
    starts = [_steps(n, p, config.overlap) for n, p in zip(padded.shape, patch)]
    corners = [(a, b, c) for a in starts[0] for b in starts[1] for c in starts[2]]
    weight = _gaussian(patch) if config.blending == "gaussian" else np.ones(patch, dtype=np.float32)
    acc: np.ndarray | None = None
    norm = np.zeros(padded.shape, dtype=np.float32)
    for i in range(0, len(corners), config.batch_size):
        chunk = corners[i : i + config.batch_size]
        windows = [tuple(slice(s, s + p) for s, p in zip(c, patch)) for c in chunk]
        pred = run(np.stack([padded[w][None] for w in windows]))
        if acc is None:
            acc = np.zeros((pred.shape[1], *padded.shape), dtype=np.float32)
        for w, scores in zip(windows, pred):
            acc[(slice(None), *w)] += scores * weight
            norm[w] += weight
    assert acc is not None
    acc /= norm
    return acc[:, : shape[0], : shape[1], : shape[2]]


def _steps(size: int, patch: int, overlap: float) -> list[int]:
    """Window starts covering [0, size) with about `overlap` shared between neighbours, evenly spread."""
    if size <= patch:
        return [0]
    stride = patch * (1.0 - overlap)
    n = int(np.ceil((size - patch) / stride)) + 1
    return [int(round(i * (size - patch) / (n - 1))) for i in range(n)]


def _gaussian(patch: tuple[int, int, int]) -> np.ndarray:
    """Importance map peaking at the patch centre, sigma = patch/8 (nnU-Net's choice)."""
    weight = np.ones((1, 1, 1), dtype=np.float64)
    for axis, n in enumerate(patch):
        g = np.exp(-0.5 * ((np.arange(n) - (n - 1) / 2) / (n / 8)) ** 2)
        shape = [1, 1, 1]
        shape[axis] = n
        weight = weight * g.reshape(shape)
    weight /= weight.max()
    return np.maximum(weight, 1e-6).astype(np.float32)
