"""The student grid: in-plane resampling, padding, the exact way back, and mm-based 2.5D context."""

from __future__ import annotations

import numpy as np

from edgemed.artifacts import PreprocessSpec
from edgemed.io import Volume, context_stack, from_student_grid, prepare_volume, student_grid_geometry, to_student_grid


def _volume(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> Volume:
    rng = np.random.default_rng(0)
    return Volume(rng.normal(40, 200, shape).astype(np.float32), np.diag([*spacing, 1.0]))


def test_geometry_pads_to_the_stride_and_centres() -> None:
    vol = _volume((122, 101, 7), (3.0, 3.0, 3.0))
    geom = student_grid_geometry(vol, PreprocessSpec(spacing_mm=(2.0, 2.0), pad_multiple=16))
    assert geom.resampled_xy == (183, 152)
    assert geom.padded_hw == (192, 160)
    assert geom.offset_xy == (4, 4)
    image, _ = prepare_volume(vol, PreprocessSpec(spacing_mm=(2.0, 2.0)))
    assert image.shape == (7, 192, 160) and image.dtype == np.float32
    assert image.min() >= 0 and image.max() <= 1
    assert (image[:, :4] == 0).all()  # padding is air


def test_labels_survive_the_round_trip() -> None:
    vol = _volume((40, 30, 5), (3.0, 3.0, 5.0))
    labels = np.zeros(vol.shape, np.uint8)
    labels[10:30, 5:20] = 1
    geom = student_grid_geometry(vol, PreprocessSpec(spacing_mm=(1.5, 1.5), pad_multiple=8))
    on_grid = to_student_grid(labels, geom, order="nearest")
    one_hot = np.stack([1 - on_grid, on_grid], axis=1).astype(np.float32)
    back = from_student_grid(one_hot, geom).argmax(0)
    np.testing.assert_array_equal(back, labels)


def test_probabilities_pad_as_background() -> None:
    vol = _volume((20, 18, 3), (2.0, 2.0, 2.0))
    probs = np.zeros((2, 20, 18, 3), np.float32)
    probs[1] = 1.0
    geom = student_grid_geometry(vol, PreprocessSpec(spacing_mm=(2.0, 2.0), pad_multiple=16))
    grid = to_student_grid(probs, geom, order="linear")
    np.testing.assert_allclose(grid.sum(axis=1), 1.0)
    assert grid[0, 0, 0, 0] == 1.0  # padded corner is background


def test_context_is_measured_in_mm() -> None:
    z = np.arange(10, dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    # 1 mm slices, 3 mm context spacing: neighbours 3 slices away; clamped at the edges.
    vol1 = _volume((4, 4, 10), (1.0, 1.0, 1.0))
    step1 = student_grid_geometry(vol1, PreprocessSpec(context_slices=1, context_spacing_mm=3.0)).context_step
    np.testing.assert_array_equal(context_stack(z, [5, 1], 1, step=step1)[:, :, 0, 0], [[2, 5, 8], [0, 1, 4]])
    # 2 mm slices: 1.5 slices away, linearly interpolated.
    vol2 = _volume((4, 4, 10), (1.0, 1.0, 2.0))
    step2 = student_grid_geometry(vol2, PreprocessSpec(context_slices=1, context_spacing_mm=3.0)).context_step
    np.testing.assert_allclose(context_stack(z, [5], 1, step=step2)[0, :, 0, 0], [3.5, 5, 6.5])
    # None: adjacent slices whatever their thickness.
    step3 = student_grid_geometry(vol2, PreprocessSpec(context_slices=1, context_spacing_mm=None)).context_step
    assert step3 == 1.0
