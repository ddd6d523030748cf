"""Body crop: the student sees the body, not the table, the air or arms held apart; masks come back whole."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgemed.artifacts import PreprocessSpec
from edgemed.io import Volume, body_box, from_student_grid, prepare_volume, student_grid_geometry, to_student_grid


def _torso_on_table(spacing: float = 1.0) -> tuple[Volume, tuple[slice, slice]]:
    """A 400 x 400 mm field of view: an elliptic trunk, two arms apart from it, a thin table below."""
    n = int(400 / spacing)
    x, y = np.meshgrid(np.arange(n) * spacing, np.arange(n) * spacing, indexing="ij")
    trunk = ((x - 200) / 120) ** 2 + ((y - 210) / 90) ** 2 <= 1          # x 80..320, y 120..300
    arms = (((x - 30) / 15) ** 2 + ((y - 210) / 15) ** 2 <= 1) | (((x - 370) / 15) ** 2 + ((y - 210) / 15) ** 2 <= 1)
    table = (y >= 100) & (y < 106)                                        # 6 mm plate, 14 mm below the trunk
    hu = np.full((n, n), -1000.0)
    hu[trunk | arms] = 40.0
    hu[table] = 300.0
    array = np.repeat(hu[:, :, None], 6, axis=2).astype(np.int16)
    vol = Volume(array, np.diag([spacing, spacing, 3.0, 1.0]), "CT", "torso")
    return vol, (slice(int(80 / spacing), int(320 / spacing)), slice(int(120 / spacing), int(300 / spacing)))


def test_box_holds_the_trunk_and_drops_table_and_arms() -> None:
    vol, (xs, ys) = _torso_on_table()
    x0, x1, y0, y1 = body_box(vol, margin_mm=10.0)
    # The trunk plus the 10 mm margin, less the few mm the opening trims off the ellipse's tips
    # (3 mm working grid); not the arms at x≈15..45 / 355..385, not the table at y≈100..106.
    assert 60 <= x0 <= xs.start - 5 and xs.stop + 5 <= x1 <= 340
    assert 106 <= y0 <= ys.start - 5 and ys.stop + 5 <= y1 <= 320


def test_nothing_body_like_keeps_the_whole_slice() -> None:
    air = Volume(np.full((50, 40, 3), -1000, np.int16), np.eye(4), "CT", "air")
    solid = Volume(np.full((50, 40, 3), 40, np.int16), np.eye(4), "CT", "solid")
    assert body_box(air, 10.0) == (0, 50, 0, 40)
    assert body_box(solid, 10.0) == (0, 50, 0, 40)


def test_crop_round_trip_returns_masks_on_the_full_grid() -> None:
    vol, (xs, ys) = _torso_on_table(spacing=2.0)
    spec = PreprocessSpec(spacing_mm=(2.0, 2.0), context_slices=0, pad_multiple=8)
    geom = student_grid_geometry(vol, spec)
    assert geom.crop_xy is not None and geom.resampled_xy[0] < vol.shape[0]
    image, geom2 = prepare_volume(vol, spec)
    assert geom2 == geom and image.shape == (6, *geom.padded_hw)
    organ = np.zeros(vol.shape, np.uint8)
    organ[xs.start + 20:xs.stop - 20, ys.start + 20:ys.stop - 20] = 1
    onehot = np.stack([1 - organ, organ]).astype(np.float32)
    back = from_student_grid(to_student_grid(onehot, geom, order="linear"), geom)
    assert back.shape == (2, *vol.shape)
    assert np.array_equal(back.argmax(0), organ)
    x0, x1, _, _ = geom.box
    assert np.all(back[0, :x0] == 1.0) and np.all(back[1, x1:] == 0.0)  # outside the crop: background


def test_crop_off_matches_the_old_whole_slice_grid() -> None:
    vol, _ = _torso_on_table(spacing=4.0)
    geom = student_grid_geometry(vol, PreprocessSpec(spacing_mm=(4.0, 4.0), body_crop=False))
    assert geom.crop_xy is None and geom.resampled_xy == (100, 100)


def test_specs_written_before_body_crop_load_without_it() -> None:
    raw = PreprocessSpec().to_json()
    assert raw["body_crop"] is True
    del raw["body_crop"], raw["body_margin_mm"]
    assert PreprocessSpec.from_json(raw).body_crop is False


def test_real_ct_crop_drops_the_air_around_the_patient(real_data: Path) -> None:
    from edgemed.io import read_volume

    ct = read_volume(real_data / "dcmqi_ct3slice" / "ct")
    x0, x1, y0, y1 = body_box(ct, 10.0)
    # 512 x 512 at 0.81 mm (415 mm): the trunk is ~390 x 325 mm; the crop keeps it whole and is smaller.
    assert (x1 - x0) * (y1 - y0) < 0.85 * 512 * 512
    from edgemed.io import read_labels

    liver = read_labels(real_data / "dcmqi_ct3slice" / "seg" / "liver.dcm", like=ct).array > 0
    assert liver[x0:x1, y0:y1].sum() == liver.sum()
