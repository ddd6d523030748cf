"""Ensembles: several students trained with different seeds, shipped as one network and one ONNX graph."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _phantom_pairs import write_phantom_pairs

from edgemed.artifacts import PreprocessSpec, StudentCheckpoint
from edgemed.compress import DistillConfig, distill
from edgemed.errors import ConfigError
from edgemed.phantom import PhantomConfig

SMALL = PhantomConfig(shape=(48, 40, 24), spacing_mm=(8.0, 8.0, 10.0))


@pytest.fixture(scope="module")
def ensemble_student(tmp_path_factory: pytest.TempPathFactory) -> StudentCheckpoint:
    root = tmp_path_factory.mktemp("ens")
    scans, segs = write_phantom_pairs(root, range(2), SMALL)
    cfg = DistillConfig(organs=("liver",), student="unet2d", student_kwargs={"widths": [8, 16, 32]}, epochs=3,
                        lr=1e-2, ensemble=2, threads=2,
                        preprocess=PreprocessSpec(spacing_mm=(8.0, 8.0), context_slices=1, pad_multiple=4))
    return distill(scans, cfg, root / "liver", teacher_predictions=segs, progress=False)


def test_members_differ_and_output_is_their_mean_probability(ensemble_student: StudentCheckpoint) -> None:
    from edgemed.models import Ensemble, load_student

    assert ensemble_student.architecture["members"] == 2
    assert ensemble_student.metadata["training"]["members"] == 2
    net = load_student(ensemble_student)
    assert isinstance(net, Ensemble) and len(net.members) == 2
    a, b = (next(m.parameters()) for m in net.members)
    assert not torch.equal(a, b)  # different seeds, different members
    x = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        mean = torch.stack([m(x).softmax(1) for m in net.members]).mean(0)
        np.testing.assert_allclose(net(x).softmax(1).numpy(), mean.numpy(), atol=1e-5)
    history = json.loads((ensemble_student.path / "history.json").read_text())
    assert {h.get("member") for h in history if "member" in h} == {0, 1}
    assert "ensemble_val_dice" in history[-1]


def test_ensemble_exports_as_one_graph_and_runtime_matches_torch(ensemble_student: StudentCheckpoint,
                                                                tmp_path: Path) -> None:
    from edgemed import runtime
    from edgemed.export import to_onnx
    from edgemed.models import load_student, predict_volume
    from edgemed.phantom import make_phantom

    bundle = to_onnx(ensemble_student, tmp_path / "bundle")
    assert len(list(bundle.path.glob("*.onnx"))) == 1
    ct, _ = make_phantom(7, SMALL)
    torch_mask = predict_volume(load_student(ensemble_student), ct, ensemble_student.preprocess).argmax(0) == 1
    with runtime.load(bundle.path, backend="ort") as seg:
        rt_mask = seg.segment(ct).array == 5
    assert np.array_equal(rt_mask, torch_mask)


def test_ensemble_size_is_validated() -> None:
    from edgemed.models import StudentSpec

    with pytest.raises(ConfigError, match="ensemble=0"):
        DistillConfig(organs=("liver",), ensemble=0)
    with pytest.raises(ConfigError, match="members=17"):
        StudentSpec(arch="unet2d", in_channels=3, num_classes=2, members=17)


def test_separately_distilled_students_pool_into_the_same_ensemble(tmp_path: Path,
                                                                    ensemble_student: StudentCheckpoint) -> None:
    # ensemble=2, seed=0 trains exactly the networks of two runs with seeds 0 and 1.
    from edgemed.compress import ensemble_students

    root = ensemble_student.path.parent
    scans, segs = sorted(root.glob("ct*.nii.gz")), sorted(root.glob("seg*.nii.gz"))
    recipe = ensemble_student.metadata["recipe"]
    singles = []
    for seed in (0, 1):
        cfg = DistillConfig(organs=("liver",), student="unet2d", student_kwargs={"widths": [8, 16, 32]}, epochs=3,
                            lr=1e-2, threads=2, seed=seed,
                            preprocess=PreprocessSpec(spacing_mm=(8.0, 8.0), context_slices=1, pad_multiple=4))
        assert json.loads(json.dumps(cfg.to_json())) == {**recipe, "ensemble": 1, "seed": seed}
        singles.append(distill(scans, cfg, tmp_path / f"s{seed}", teacher_predictions=segs, progress=False))
    pooled = ensemble_students(singles, tmp_path / "pooled")
    a, b = pooled.state_dict_numpy(), ensemble_student.state_dict_numpy()
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    assert pooled.metadata["training"]["member_seeds"] == [0, 1]


def test_pooling_refuses_students_that_do_not_match(ensemble_student: StudentCheckpoint, tmp_path: Path) -> None:
    from edgemed.compress import ensemble_students

    with pytest.raises(ConfigError, match="at least 2"):
        ensemble_students([ensemble_student], tmp_path / "x")
