"""Teachers that run a network: torch / TorchScript / ONNX parity, nnU-Net v2 folders, bad specs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

import _tiny_nnunet
import _tiny_teachers
from _tiny_teachers import synthetic_volume
from edgemed.errors import ArtifactError, ConfigError, InputError
from edgemed.io import Volume, window_hu
from edgemed.models.teachers import (
    NnUNetTeacher,
    OnnxTeacher,
    Teacher,
    TeacherInputConfig,
    TorchTeacher,
    load_teacher,
)

# torch 2.13 deprecates torch.jit.load; TorchScript teachers are still supported here.
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")

ENTRY_3D = "_tiny_teachers:make_tiny_teacher"
ENTRY_2D = "_tiny_teachers:make_tiny_teacher_2d"
ENTRY_POINTWISE = "_tiny_teachers:make_pointwise_teacher"
IDS = (0, 5, 6)


@pytest.fixture(scope="module")
def files3d(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _tiny_teachers.write_teacher_files(tmp_path_factory.mktemp("t3d"), "make_tiny_teacher", dims=3)


@pytest.fixture(scope="module")
def files2d(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return _tiny_teachers.write_teacher_files(tmp_path_factory.mktemp("t2d"), "make_tiny_teacher_2d", dims=2)


# --- torch, TorchScript and ONNX teachers --------------------------------------------------------

PARITY_CONFIGS = {
    "3d-patches-resampled": TeacherInputConfig(
        dims=3, patch_size=(12, 12, 8), spacing_mm=(1.5, 1.5, 2.0), class_ids=IDS, batch_size=3
    ),
    "3d-whole-zscore": TeacherInputConfig(dims=3, zscore=(-500.0, 400.0), class_ids=IDS),
    "2d-slices-resampled": TeacherInputConfig(dims=2, spacing_mm=(1.5, 1.5, None), class_ids=IDS, batch_size=3),
}


@pytest.mark.parametrize("name", sorted(PARITY_CONFIGS))
def test_teacher_torch_torchscript_onnx_agree(name: str, files3d: dict[str, Path], files2d: dict[str, Path]) -> None:
    config = PARITY_CONFIGS[name]
    files, entry = (files2d, ENTRY_2D) if config.dims == 2 else (files3d, ENTRY_3D)
    volume = synthetic_volume()
    teachers = [
        load_teacher(entry, checkpoint=files["checkpoint"], config=config),
        load_teacher(files["torchscript"], config=config),
        load_teacher(files["onnx"], config=config),
    ]
    assert [type(t) for t in teachers] == [TorchTeacher, TorchTeacher, OnnxTeacher]
    outs = [t.predict(volume) for t in teachers]
    for out in outs:
        assert out.kind == "logits" and out.class_ids == IDS
        assert out.scores.shape == (3, *volume.shape) and out.labels.shape == volume.shape
        np.testing.assert_allclose(out.scores, outs[0].scores, atol=1e-4, rtol=1e-4)
        assert (out.labels == outs[0].labels).mean() > 0.999
    assert set(np.unique(outs[0].labels)) <= set(IDS)


def test_teacher_identity_names_files_and_hashes(files3d: dict[str, Path]) -> None:
    sha = {k: hashlib.sha256(p.read_bytes()).hexdigest() for k, p in files3d.items()}
    torch_teacher = TorchTeacher.from_entry_point(ENTRY_3D, checkpoint=files3d["checkpoint"])
    assert torch_teacher.identity() == {
        "kind": "torch", "name": ENTRY_3D, "sha256": sha["checkpoint"], "checkpoint": "weights.pt"}
    assert TorchTeacher.from_torchscript(files3d["torchscript"]).identity() == {
        "kind": "torchscript", "name": "teacher.ts", "sha256": sha["torchscript"]}
    assert OnnxTeacher(files3d["onnx"]).identity() == {"kind": "onnx", "name": "teacher.onnx", "sha256": sha["onnx"]}
    assert isinstance(torch_teacher, Teacher)


def test_teacher_torch_matches_direct_forward(files3d: dict[str, Path], files2d: dict[str, Path]) -> None:
    volume = synthetic_volume()
    x = window_hu(volume.array, window_hu=(-1024.0, 1024.0))
    net3d = _tiny_teachers.make_tiny_teacher()
    net3d.load_state_dict(torch.load(files3d["checkpoint"], weights_only=True)["state_dict"])
    net2d = _tiny_teachers.make_tiny_teacher_2d()
    net2d.load_state_dict(torch.load(files2d["checkpoint"], weights_only=True)["state_dict"])
    with torch.no_grad():
        want3d = net3d(torch.from_numpy(x)[None, None])[0].numpy()
        slices = [torch.from_numpy(x[:, :, k].copy())[None, None] for k in range(x.shape[2])]
        want2d = np.stack([net2d(s)[0].numpy() for s in slices], axis=-1)
    got3d = load_teacher(ENTRY_3D, checkpoint=files3d["checkpoint"]).predict(volume).scores
    slice_config = TeacherInputConfig(dims=2, batch_size=4)
    got2d = load_teacher(ENTRY_2D, checkpoint=files2d["checkpoint"], config=slice_config).predict(volume).scores
    np.testing.assert_allclose(got3d, want3d, atol=1e-5)
    np.testing.assert_allclose(got2d, want2d, atol=1e-5)
    untrained = load_teacher(ENTRY_3D).predict(volume).scores
    assert np.abs(untrained - got3d).max() > 0.1  # the checkpoint was really loaded


@pytest.mark.parametrize(
    "config",
    [
        TeacherInputConfig(patch_size=(8, 8, 4), blending="gaussian", batch_size=5),
        TeacherInputConfig(patch_size=(8, 8, 4), overlap=0.25, blending="uniform"),
        TeacherInputConfig(patch_size=(32, 8, 16)),  # larger than the volume along two axes: padded
        TeacherInputConfig(size_multiple=8),
    ],
    ids=["gaussian", "uniform", "padded-patch", "size-multiple"],
)
def test_teacher_tiling_is_exact_for_a_pointwise_network(config: TeacherInputConfig) -> None:
    volume = synthetic_volume((20, 18, 10))
    whole = load_teacher(ENTRY_POINTWISE).predict(volume).scores
    np.testing.assert_allclose(load_teacher(ENTRY_POINTWISE, config=config).predict(volume).scores, whole, atol=1e-5)


def test_teacher_spacing_resampling_returns_to_the_volume_grid() -> None:
    volume = synthetic_volume((24, 20, 12), spacing_mm=(1.0, 1.0, 2.0))
    native = load_teacher(ENTRY_POINTWISE).predict(volume)
    coarse = load_teacher(ENTRY_POINTWISE, config=TeacherInputConfig(spacing_mm=(2.0, 2.0, 2.0))).predict(volume)
    assert coarse.scores.shape == native.scores.shape
    # A smooth scan seen at half the resolution: close, not equal.
    err = np.abs(coarse.scores - native.scores)
    assert err.mean() < 0.05 * np.abs(native.scores).mean() and err.max() > 1e-6


def test_teacher_onnx_with_external_data(files3d: dict[str, Path], tmp_path: Path) -> None:
    import onnx

    model = onnx.load(str(files3d["onnx"]))
    path = tmp_path / "ext.onnx"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.onnx.data", size_threshold=0)
    assert (tmp_path / "ext.onnx.data").is_file()
    volume = synthetic_volume()
    teacher = OnnxTeacher(path)
    plain = OnnxTeacher(files3d["onnx"]).predict(volume).scores
    np.testing.assert_allclose(teacher.predict(volume).scores, plain, atol=1e-6)
    before = teacher.identity()["sha256"]
    assert before != hashlib.sha256(path.read_bytes()).hexdigest()  # the weights file counts too
    data = tmp_path / "ext.onnx.data"
    data.write_bytes(data.read_bytes()[:-4] + b"\0\0\0\0")
    assert OnnxTeacher(path).identity()["sha256"] != before


# --- nnU-Net v2 -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nnunet_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _tiny_nnunet.write_model_folder(tmp_path_factory.mktemp("nnunet"))


@pytest.fixture(scope="module")
def nnunet_teacher(nnunet_folder: Path) -> NnUNetTeacher:
    teacher = load_teacher(nnunet_folder)  # the dataset folder: its single trainer subfolder is found
    assert isinstance(teacher, NnUNetTeacher)
    return teacher


def _direct_probabilities(hu_xyz: np.ndarray) -> np.ndarray:
    """The same network run directly in torch on nnU-Net's (z, y, x) normalised input, back to (C, x, y, z)."""
    x = torch.from_numpy(np.ascontiguousarray(_tiny_nnunet.ct_normalise(hu_xyz).transpose(2, 1, 0)))[None, None]
    with torch.no_grad():
        return torch.softmax(_tiny_nnunet.build_network()(x), 1)[0].numpy().transpose(0, 3, 2, 1)


def test_teacher_nnunet_matches_the_network_run_directly(nnunet_teacher: NnUNetTeacher) -> None:
    # RAS spacing (x, y, z) = (1.5, 2.0, 3.0) is the plans' (z, y, x) = (3.0, 2.0, 1.5): no resampling, and the
    # (16, 12, 8) volume is exactly one (8, 12, 16) patch, so nnU-Net should reproduce the plain forward pass.
    rng = np.random.default_rng(0)
    hu = (rng.normal(0, 300, (16, 12, 8)) + 0.5).astype(np.float32)  # no exact zeros: nnU-Net crops those
    volume = Volume(hu, np.diag([1.5, 2.0, 3.0, 1.0]), "CT", "tiny.nii.gz")
    out = nnunet_teacher.predict(volume)
    want = _direct_probabilities(hu)
    assert out.kind == "probs" and out.class_ids == (0, 1, 2) and out.scores.shape == (3, 16, 12, 8)
    np.testing.assert_allclose(out.scores.sum(axis=0), 1.0, atol=1e-4)
    # nnU-Net accumulates tiles in float16 with a Gaussian that underflows at patch corners: compare the
    # interior tightly, and the argmax everywhere.
    np.testing.assert_allclose(out.scores[:, 4:12, 3:9, 2:6], want[:, 4:12, 3:9, 2:6], atol=2e-3)
    confident = want.max(axis=0) > 0.9
    assert confident.sum() > 10 and np.array_equal(out.labels[confident], want.argmax(0)[confident])
    assert (out.labels == want.argmax(0)).mean() > 0.95


def test_teacher_nnunet_resamples_and_tiles_on_the_volume_grid(nnunet_teacher: NnUNetTeacher) -> None:
    volume = synthetic_volume((30, 22, 11), spacing_mm=(1.2, 1.7, 3.5))
    out = nnunet_teacher.predict(volume)
    assert out.scores.shape == (3, *volume.shape) and out.labels.shape == volume.shape
    np.testing.assert_allclose(out.scores.sum(axis=0), 1.0, atol=1e-3)
    assert np.array_equal(out.labels, np.asarray(out.class_ids)[out.scores.argmax(0)])
    liver = out.probabilities([1])
    np.testing.assert_allclose(liver[1], out.scores[1], atol=1e-6)


def test_teacher_nnunet_labels_and_identity(nnunet_teacher: NnUNetTeacher, nnunet_folder: Path) -> None:
    assert nnunet_teacher.label_names() == {0: "background", 1: "liver", 2: "spleen"}
    checkpoint = nnunet_folder / "nnUNetTrainer__nnUNetPlans__3d_fullres" / "fold_0" / "checkpoint_final.pth"
    assert nnunet_teacher.identity() == {
        "kind": "nnunetv2",
        "name": "Dataset999_Tiny/nnUNetTrainer__nnUNetPlans__3d_fullres",
        "sha256": hashlib.sha256(checkpoint.read_bytes()).hexdigest(),
        "folds": [0],
    }


def test_teacher_nnunet_refuses_pickled_objects_unless_trusted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = _tiny_nnunet.write_model_folder(tmp_path, extra={"note": _tiny_teachers.Untrusted()})
    with pytest.raises(ArtifactError, match="trust_checkpoint=True"):
        NnUNetTeacher(folder)
    trusted = NnUNetTeacher(folder, trust_checkpoint=True)  # nnunetv2's own loader (weights_only=False)
    volume = Volume(np.full((16, 12, 8), 40.5, np.float32), np.diag([1.5, 2.0, 3.0, 1.0]))
    assert trusted.predict(volume).scores.shape == (3, 16, 12, 8)
    assert capsys.readouterr().out == ""  # nnU-Net's notices go to stderr


def test_teacher_nnunet_bad_folders(nnunet_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="fold_0"):
        NnUNetTeacher(nnunet_folder, folds=(3,))
    with pytest.raises(ConfigError, match="plans.json"):
        load_teacher(nnunet_folder, config=TeacherInputConfig())
    with pytest.raises(ConfigError, match="nnU-Net"):
        load_teacher(tmp_path)  # an empty folder


# --- bad input ----------------------------------------------------------------------------------------

def test_teacher_bad_specs(tmp_path: Path, files3d: dict[str, Path]) -> None:
    with pytest.raises(ConfigError, match="package.module:factory"):
        load_teacher("a teacher please")
    with pytest.raises(InputError, match="does not exist"):
        load_teacher(tmp_path / "missing.onnx")
    with pytest.raises(InputError):
        load_teacher(ENTRY_3D, checkpoint=tmp_path / "missing.pt")
    with pytest.raises(ConfigError, match="architecture"):
        load_teacher(files3d["checkpoint"])  # a state dict alone
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ConfigError, match="unrecognised"):
        load_teacher(tmp_path / "notes.txt")
    with pytest.raises(ConfigError, match="cannot import"):
        load_teacher("no_such_package_xyz.nets:unet")
    with pytest.raises(ConfigError, match="has no"):
        load_teacher("_tiny_teachers:no_such_factory")
    with pytest.raises(ConfigError, match="not a torch.nn.Module"):
        load_teacher("_tiny_teachers:make_not_a_module")
    with pytest.raises(ConfigError, match="does not fit"):
        load_teacher(ENTRY_2D, checkpoint=files3d["checkpoint"])


def test_teacher_wrong_channel_count(files3d: dict[str, Path]) -> None:
    config = TeacherInputConfig(class_ids=(0, 5))
    for teacher in (load_teacher(ENTRY_3D, config=config), load_teacher(files3d["onnx"], config=config)):
        with pytest.raises(ConfigError, match="3 output channels"):
            teacher.predict(synthetic_volume())


def test_teacher_refuses_pickled_checkpoint(tmp_path: Path) -> None:
    state = _tiny_teachers.make_tiny_teacher().state_dict()
    torch.save({"state_dict": state, "note": _tiny_teachers.Untrusted()}, tmp_path / "pickled.pt")
    with pytest.raises(ArtifactError, match="will not unpickle"):
        load_teacher(ENTRY_3D, checkpoint=tmp_path / "pickled.pt")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dims": 4}, "dims"),
        ({"window_hu": (-100, 100), "zscore": (0, 1)}, "not both"),
        ({"window_hu": (100, -100)}, "lower bound"),
        ({"zscore": (0, 0)}, "std"),
        ({"dims": 2, "patch_size": (8, 8, 8)}, "patch_size"),
        ({"patch_size": (8, 8)}, "patch_size"),
        ({"spacing_mm": (1.0, 0.0, 1.0)}, "positive"),
        ({"spacing_mm": (None, None, None)}, "positive"),
        ({"spacing_mm": (1.0, 1.0)}, "three"),
        ({"overlap": 1.0}, "overlap"),
        ({"class_ids": (0, 5, 5)}, "distinct"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_teacher_input_config_validates(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TeacherInputConfig(**kwargs)


def test_teacher_input_config_defaults() -> None:
    assert TeacherInputConfig().window_hu == (-1024.0, 1024.0)
    assert TeacherInputConfig(zscore=(40, 350)).window_hu is None
    assert TeacherInputConfig(spacing_mm=(1, 1, None)).spacing_mm == (1.0, 1.0, None)
