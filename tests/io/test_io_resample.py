"""Resampling: round trips, geometry of the new affine, labels, speed."""

from __future__ import annotations


import numpy as np
import pytest

from edgemed.errors import ConfigError
from edgemed.io import Volume, resample_array, resample_like, resample_to_shape, resample_to_spacing

AFFINE = np.array([[0.8, 0, 0, -120.0], [0, 0.8, 0, -95.5], [0, 0, 2.0, 40.0], [0, 0, 0, 1]])


def _blob(shape: tuple[int, int, int]) -> np.ndarray:
    grid = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    return np.exp(-sum(g**2 for g in grid) / 0.3).astype(np.float32)


def _world(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    index = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1).reshape(-1, 3)
    return (affine[:3, :3] @ index.T).T + affine[:3, 3]


def test_smooth_blob_round_trip_is_close() -> None:
    volume = Volume(_blob((64, 60, 20)), AFFINE)
    down = resample_to_spacing(volume, (1.6, 1.6, None), order="linear")
    assert down.shape == (32, 30, 20)
    back = resample_to_shape(down, volume.shape, order="linear")
    np.testing.assert_allclose(back.affine, volume.affine, atol=1e-9)
    assert np.abs(back.array - volume.array).max() < 0.03
    again = resample_like(down, volume, order="linear")
    np.testing.assert_allclose(again.array, back.array, atol=1e-5)


def test_labels_round_trip_exactly_at_integer_zoom() -> None:
    rng = np.random.default_rng(0)
    labels = Volume(rng.integers(0, 5, (9, 8, 7)).astype(np.uint8), AFFINE, "SEG")
    for factor in (2, 3):
        up = resample_to_spacing(labels, tuple(s / factor for s in labels.spacing_mm), order="nearest")
        assert up.shape == tuple(factor * n for n in labels.shape) and up.array.dtype == np.uint8
        np.testing.assert_array_equal(resample_to_shape(up, labels.shape, order="nearest").array, labels.array)
        np.testing.assert_array_equal(resample_like(up, labels, order="nearest").array, labels.array)


def test_resampled_affine_maps_voxels_to_where_they_sample() -> None:
    # A linear function of world position is reproduced exactly by linear interpolation, so
    # every interior voxel of the result must hold f(its own world position).
    shape = (30, 24, 12)
    coefficients = np.array([0.3, -0.2, 0.5])
    values = (_world(AFFINE, shape) @ coefficients).reshape(shape)
    volume = Volume(values.astype(np.float64), AFFINE)
    for spacing in [(1.7, 0.5, 3.1), (2.4, 2.4, None), (0.4, 0.4, 1.0)]:
        out = resample_to_spacing(volume, spacing, order="linear")
        expected = (_world(out.affine, out.shape) @ coefficients).reshape(out.shape)
        interior = tuple(slice(2, -2) for _ in range(3))
        np.testing.assert_allclose(out.array[interior], expected[interior], atol=1e-9)
        # Same field of view, same centre.
        centre = lambda v: v.affine @ [*(np.array(v.shape) - 1) / 2, 1]  # noqa: E731
        np.testing.assert_allclose(centre(out), centre(volume), atol=1e-9)


def test_odd_zoom_voxel_centres_coincide() -> None:
    volume = Volume(np.zeros((9, 9, 9), np.float32), AFFINE)
    out = resample_to_spacing(volume, tuple(3 * s for s in volume.spacing_mm), order="linear")
    np.testing.assert_allclose(out.spacing_mm, (2.4, 2.4, 6.0))
    # New voxel o sits exactly on old voxel 3o + 1.
    np.testing.assert_allclose(out.affine @ [1, 2, 0, 1], volume.affine @ [4, 7, 1, 1], atol=1e-9)


def test_none_keeps_axes_and_spacing_validation() -> None:
    volume = Volume(np.zeros((10, 10, 4), np.float32), AFFINE)
    assert resample_to_spacing(volume, (None, 1.6, None), order="linear").shape == (10, 5, 4)
    assert resample_to_spacing(volume, 1.6, order="linear").shape == (5, 5, 5)
    with pytest.raises(ConfigError, match="positive"):
        resample_to_spacing(volume, (0.0, 1.0, 1.0), order="linear")
    with pytest.raises(ConfigError, match="order="):
        resample_to_spacing(volume, 1.0, order="cubic")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="nearest"):
        resample_to_spacing(volume.with_array(np.zeros((10, 10, 4), np.uint8), modality="SEG"), 1.0, order="linear")


def test_resample_array_half_pixel_and_channels() -> None:
    row = np.array([0.0, 1.0, 2.0, 3.0], np.float32)
    # Shrinking averages the linear interpolant (edge values extend) over each output voxel:
    # at 2x, the first output covers [0, 2) in input widths: (0 * 0.5 + 1.125) / 2.
    np.testing.assert_allclose(resample_array(row, (2,), "linear"), [0.5625, 2.4375])
    np.testing.assert_allclose(resample_array(np.arange(12.0), (3,), "linear")[1], 5.5)  # linear stays exact
    np.testing.assert_allclose(resample_array(row, (8,), "linear"), [0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3])
    stack = np.stack([_blob((16, 16, 4))] * 3)
    out = resample_array(stack, (None, 8, 8, None), "linear")
    assert out.shape == (3, 8, 8, 4) and out.dtype == np.float32
    assert resample_array(np.arange(6, dtype=np.int16).reshape(1, 1, 6), (1, 1, 3), "nearest").dtype == np.int16
    assert resample_array(np.ones((2, 2, 2), np.int16), (4, 4, 4), "linear").dtype == np.float32


def test_resample_like_outside_is_filled() -> None:
    volume = Volume(np.full((4, 4, 4), 7.0, np.float32), np.eye(4))
    shifted = np.eye(4)
    shifted[0, 3] = 2.0
    like = Volume(np.zeros((4, 4, 4), np.float32), shifted)
    out = resample_like(volume, like, order="linear", fill_value=-1.0)
    np.testing.assert_array_equal(out.array[:2], 7.0)
    np.testing.assert_array_equal(out.array[2:], -1.0)
    np.testing.assert_array_equal(out.affine, like.affine)


def test_oblique_target_uses_the_general_path() -> None:
    rng = np.random.default_rng(3)
    volume = Volume(rng.normal(size=(5, 6, 7)).astype(np.float32), np.diag([1.0, 2.0, 3.0, 1.0]))
    # A grid whose i and j axes are swapped relative to the volume: not separable.
    swapped = np.array([[0, 1.0, 0, 0], [2.0, 0, 0, 0], [0, 0, 3.0, 0], [0, 0, 0, 1]])
    like = Volume(np.zeros((6, 5, 7), np.float32), swapped)
    for order in ("linear", "nearest"):
        out = resample_like(volume, like, order=order)  # type: ignore[arg-type]
        np.testing.assert_allclose(out.array, volume.array.transpose(1, 0, 2), atol=1e-6)
    # Half a voxel inside the swapped grid: linear mixes the two neighbours equally.
    half = swapped.copy()
    half[1, 3] = 1.0  # +1 mm in y = half a source voxel along j
    out = resample_like(volume, Volume(np.zeros((6, 5, 7), np.float32), half), order="linear")
    expected = 0.5 * (volume.array[:, 0:5] + volume.array[:, 1:6]).transpose(1, 0, 2)
    np.testing.assert_allclose(out.array[:5], expected, atol=1e-5)


def test_in_plane_half_of_a_ct_averages_and_keeps_slices() -> None:
    # (Speed is measured in benchmarks, never asserted in unit tests.)
    volume = Volume(np.tile(_blob((512, 512, 1)), (1, 1, 20)), AFFINE)
    out = resample_to_spacing(volume, (1.6, 1.6, None), order="linear")
    assert out.shape == (256, 256, 20)
    np.testing.assert_allclose(out.array.mean(), volume.array.mean(), rtol=1e-3)  # antialiasing keeps the mean
    noise = np.random.default_rng(0).normal(size=(512, 512, 1)).astype(np.float32)
    halved = resample_to_spacing(Volume(noise, AFFINE), (1.6, 1.6, None), order="linear").array
    assert halved.std() < 0.6 * noise.std()  # 2x2 averaging: noise drops (point sampling would keep it)
