"""Distillation on generated phantoms: it learns, it is repeatable, it refuses bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _phantom_pairs import write_phantom_pairs

from edgemed.artifacts import PreprocessSpec, StudentCheckpoint
from edgemed.compress import AugmentConfig, DistillConfig, config_from_dict, distill
from edgemed.errors import ConfigError, InputError
from edgemed.phantom import PhantomConfig

SMALL = PhantomConfig(shape=(48, 40, 24), spacing_mm=(8.0, 8.0, 10.0))
# Mild augmentation: phantoms need no robustness to other scanners, and 8 epochs are few.
FAST = dict(student="unet2d", student_kwargs={"widths": [8, 16, 32]}, epochs=8, batch_size=8, lr=1e-2,
            augment=AugmentConfig(scale=(0.9, 1.1), aspect=0.0, elastic=0.0),
            preprocess=PreprocessSpec(spacing_mm=(8.0, 8.0), context_slices=1, pad_multiple=4), threads=2)


@pytest.fixture(scope="module")
def phantom_files(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[Path], list[Path]]:
    root = tmp_path_factory.mktemp("phantoms")
    scans, segs = write_phantom_pairs(root, range(3), SMALL)
    return scans, segs


@pytest.fixture(scope="module")
def liver_student(phantom_files: tuple[list[Path], list[Path]], tmp_path_factory: pytest.TempPathFactory) -> StudentCheckpoint:
    scans, segs = phantom_files
    out = tmp_path_factory.mktemp("run") / "liver"
    return distill(scans, DistillConfig(organs=("liver",), **FAST), out, teacher_predictions=segs, progress=False)


def test_student_learns_liver_from_stored_labels(liver_student: StudentCheckpoint) -> None:
    meta = liver_student.metadata
    assert meta["organs"] == [{"channel": 1, "label_id": 5, "name": "liver"}]
    assert meta["teacher"]["kind"] == "stored"
    # Three scans: the last is held out whole, never trained on (native grid). An 8-epoch tiny
    # student trained on two phantoms finds much of the liver of a third, unseen one, and
    # learned it during training (the first epoch's validation Dice is far lower).
    assert meta["validation"]["dice"]["liver"] > 0.4
    import json

    history = json.loads((liver_student.path / "history.json").read_text())
    assert history[-1]["val_dice"]["liver"] > history[0]["val_dice"]["liver"] + 0.2
    assert meta["validation"]["holdout_kind"] == "scans"
    assert [p["scan"] for p in meta["validation"]["per_scan"]] == ["ct2.nii.gz"]
    assert meta["validation"]["per_scan"][0]["whole_scan"] is True
    assert meta["training"]["soft_targets"] is False


def test_checkpoint_has_no_pickle_and_rebuilds(liver_student: StudentCheckpoint) -> None:
    import torch

    from edgemed.models import load_student

    files = sorted(p.name for p in liver_student.path.iterdir())
    assert files == ["architecture.json", "history.json", "manifest.json", "weights.safetensors"]
    net = load_student(liver_student)
    out = net(torch.zeros(2, liver_student.preprocess.in_channels, 16, 16))
    assert out.shape == (2, 2, 16, 16)


def test_same_seed_same_weights(phantom_files: tuple[list[Path], list[Path]], tmp_path: Path,
                                liver_student: StudentCheckpoint) -> None:
    scans, segs = phantom_files
    again = distill(scans, DistillConfig(organs=("liver",), **FAST), tmp_path / "again", teacher_predictions=segs,
                    progress=False)
    a, b = liver_student.state_dict_numpy(), again.state_dict_numpy()
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_soft_targets_from_probability_maps(phantom_files: tuple[list[Path], list[Path]], tmp_path: Path) -> None:
    from edgemed.io import read_labels, read_volume

    scans, segs = phantom_files
    npz = []
    for scan, seg in zip(scans, segs):
        labels = read_labels(seg, like=read_volume(scan)).array
        ids = (0, 1, 5)
        logits = np.stack([np.where(labels == i, 4.0, 0.0) for i in ids]).astype(np.float32)
        npz.append(tmp_path / seg.name.replace(".nii.gz", ".npz"))
        np.savez(npz[-1], logits=logits, class_ids=np.array(ids))
    ckpt = distill(scans, DistillConfig(organs=("liver", "spleen"), **FAST), tmp_path / "soft",
                   teacher_predictions=npz, progress=False)
    meta = ckpt.metadata
    assert meta["training"]["soft_targets"] is True
    assert [o["name"] for o in meta["organs"]] == ["liver", "spleen"]
    assert meta["validation"]["dice"]["liver"] > 0.4


def test_unknown_organ_suggests_a_name() -> None:
    with pytest.raises(ConfigError, match="(?i)did you mean 'liver'"):
        from edgemed.io._label_maps import load_label_map

        load_label_map("totalsegmentator").resolve(["livr"])


def test_absent_organ_is_a_clear_error(phantom_files: tuple[list[Path], list[Path]], tmp_path: Path) -> None:
    scans, segs = phantom_files
    with pytest.raises(InputError, match="finds no pancreas"):
        distill(scans, DistillConfig(organs=("pancreas",), **FAST), tmp_path / "x", teacher_predictions=segs,
                progress=False)
    assert not (tmp_path / "x").exists()  # nothing half-written


def test_pairing_and_teacher_choice_errors(phantom_files: tuple[list[Path], list[Path]], tmp_path: Path) -> None:
    scans, segs = phantom_files
    cfg = DistillConfig(organs=("liver",), **FAST)
    with pytest.raises(ConfigError, match="pair in order"):
        distill(scans, cfg, tmp_path / "x", teacher_predictions=segs[:1])
    with pytest.raises(ConfigError, match="exactly one teacher"):
        distill(scans, cfg, tmp_path / "x")


def test_config_validation_and_typos() -> None:
    with pytest.raises(ConfigError, match="(?i)did you mean 'epochs'"):
        config_from_dict({"organs": ["liver"], "epoch": 3})
    with pytest.raises(ConfigError, match="temperature"):
        DistillConfig(organs=("liver",), temperature=0)
    with pytest.raises(ConfigError, match="augment.scale"):
        AugmentConfig(scale=(1.2, 0.9))
    cfg = config_from_dict({"organs": ["liver"], "preprocess": {"spacing_mm": [1.5, 1.5]}, "augment": {"prob": 0.5}})
    assert cfg.preprocess.spacing_mm == (1.5, 1.5) and cfg.augment.prob == 0.5


def test_one_scan_holds_out_slices_and_warns(phantom_files: tuple[list[Path], list[Path]], tmp_path: Path) -> None:
    from edgemed.errors import EdgemedWarning

    scans, segs = phantom_files
    cfg = DistillConfig(organs=("liver",), **{**FAST, "epochs": 1})
    with pytest.warns(EdgemedWarning, match="only slices of the training scan"):
        ckpt = distill(scans[:1], cfg, tmp_path / "one", teacher_predictions=segs[:1], progress=False)
    val = ckpt.metadata["validation"]
    assert val["holdout_kind"] == "slices" and val["per_scan"][0]["whole_scan"] is False


def test_heldout_scans_rule() -> None:
    from edgemed.compress._slices import heldout_scans

    assert heldout_scans(1, 0.2) == []
    assert heldout_scans(2, 0.2) == [1]
    assert heldout_scans(10, 0.2) == [8, 9]
    assert heldout_scans(3, 0.9) == [1, 2]  # never all of them
    assert heldout_scans(5, 0.0) == []


def _liver_slices(phantom_files: tuple[list[Path], list[Path]]):  # type: ignore[no-untyped-def]
    """The first phantom's prepared slices (liver vs rest), 3 neighbours each side."""
    from edgemed.compress._slices import scan_slices
    from edgemed.io import read_labels, read_volume

    scans, segs = phantom_files
    vol = read_volume(scans[0])
    mask = (read_labels(segs[0], like=vol).array == 5).astype(np.uint8)
    spec = PreprocessSpec(spacing_mm=(8.0, 8.0), context_slices=3, context_spacing_mm=None, pad_multiple=4)
    return scan_slices("ct0", vol, np.stack([1.0 - mask, mask]), mask, spec, 0.2)


def test_context_truncation_repeats_the_last_neighbour_kept(phantom_files: tuple[list[Path], list[Path]]) -> None:
    from edgemed.compress._slices import make_batch

    sc = _liver_slices(phantom_files)
    picks = [(0, 12)] * 64
    full, _, _ = make_batch([sc], picks, 3, 2)
    cut, _, _ = make_batch([sc], picks, 3, 2, rng=np.random.default_rng(0), truncate_prob=1.0)
    assert np.array_equal(cut[:, 3], full[:, 3])  # the slice itself never changes
    truncated = 0
    for x_full, x_cut in zip(full, cut):
        same = [np.array_equal(x_cut[c], x_full[c]) for c in range(7)]
        below = next(c for c in range(4) if same[c])        # first neighbour kept on the inferior side
        above = max(c for c in range(3, 7) if same[c])      # last kept on the superior side
        assert all(same[below:above + 1])
        assert all(np.array_equal(x_cut[c], x_full[below]) for c in range(below))
        assert all(np.array_equal(x_cut[c], x_full[above]) for c in range(above + 1, 7))
        truncated += below > 0 or above < 6
    assert truncated > 32  # most picks lose some context at probability 1
    again, _, _ = make_batch([sc], picks, 3, 2, rng=np.random.default_rng(0), truncate_prob=0.0)
    assert np.array_equal(again, full)


def test_flat_context_repeats_the_slice_itself_in_every_channel(phantom_files: tuple[list[Path], list[Path]]) -> None:
    from edgemed.compress._slices import make_batch

    sc = _liver_slices(phantom_files)
    picks = [(0, 12)] * 400
    full, _, _ = make_batch([sc], picks, 3, 2)
    assert not np.array_equal(full[0, 0], full[0, 3])  # the phantom's neighbours differ from the slice
    x, _, _ = make_batch([sc], picks, 3, 2, rng=np.random.default_rng(0), flat_prob=0.25, truncate_prob=0.0)
    flat = [all(np.array_equal(xi[c], xi[3]) for c in range(7)) for xi in x]
    untouched = [np.array_equal(xi, fi) for xi, fi in zip(x, full)]
    assert all(f != u for f, u in zip(flat, untouched))  # either fully flat or the full context
    assert 0.18 < np.mean(flat) < 0.32
    assert AugmentConfig().context_flat == 0.0  # opt-in: it cost students on dcmqi (README)
    with pytest.raises(ConfigError, match="context_flat"):
        AugmentConfig(context_flat=1.5)


def test_organ_contrast_changes_only_the_organ() -> None:
    import torch

    from edgemed.compress._augment import augment_batch

    x = torch.full((16, 3, 32, 32), 0.5)
    target = torch.zeros(16, 2, 32, 32)
    target[:, 0] = 1.0
    target[:, 0, 8:24, 8:24], target[:, 1, 8:24, 8:24] = 0.0, 1.0
    only_organ = AugmentConfig(prob=1.0, rotate_deg=0, scale=(1, 1), aspect=0, elastic=0, translate_frac=0,
                               noise_std=0, gamma=(1, 1), intensity_scale=0, intensity_shift=0, organ_contrast=0.1)
    y, t = augment_batch(x, target, only_organ, torch.Generator().manual_seed(0))
    assert torch.equal(t, target)
    assert torch.allclose(y[:, :, :8], x[:, :, :8])  # outside the organ: untouched
    delta = y[:, 0, 16, 16] - 0.5
    assert delta.abs().max() <= 0.1 + 1e-6 and delta.abs().max() > 0.02 and (delta > 0).any() and (delta < 0).any()
