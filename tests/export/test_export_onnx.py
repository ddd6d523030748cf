"""to_onnx: a single-file opset ≥ 17 model with dynamic batch/size, parity recorded, failures write nothing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgemed.artifacts import StudentCheckpoint, read_manifest
from edgemed.errors import ConfigError, ParityError
from edgemed.export import OnnxBundle, OnnxExportConfig, to_onnx
from edgemed.io import write_nifti
from edgemed.phantom import PhantomConfig, make_phantom
from edgemed.runtime import TensorSpec
from edgemed.runtime.backends.ort import OrtSession

SMALL = PhantomConfig(shape=(48, 40, 24), spacing_mm=(8.0, 8.0, 10.0))


@pytest.fixture(scope="module")
def bundle(export_student: StudentCheckpoint, tmp_path_factory: pytest.TempPathFactory) -> OnnxBundle:
    return to_onnx(export_student, tmp_path_factory.mktemp("export") / "liver.edgemed")


def test_bundle_records_what_the_runtime_needs(bundle: OnnxBundle, export_student: StudentCheckpoint) -> None:
    assert sorted(p.name for p in bundle.path.iterdir()) == ["manifest.json", "model.onnx"]  # no .onnx.data
    assert bundle.manifest.kind == "bundle" and bundle.manifest.schema_version == 1
    assert bundle.manifest.parent == export_student.manifest.digest
    assert bundle.opset is not None and bundle.opset >= 17
    assert bundle.precision == "fp32"
    assert bundle.inputs == (TensorSpec("image", "float32", ("batch", 3, "height", "width")),)
    assert bundle.outputs == (TensorSpec("logits", "float32", ("batch", 2, "height", "width")),)
    assert bundle.preprocess == export_student.preprocess
    assert bundle.postprocess == export_student.postprocess
    assert [(o.channel, o.label_id, o.name) for o in bundle.organs] == [(1, 5, "liver")]
    assert bundle.label_map == "totalsegmentator"
    assert bundle.validation_dice == export_student.metadata["validation"]["dice"]
    parity = bundle.parity
    assert parity["passed"] and parity["volumes"] == ["phantom-0"] and parity["slices"] > 0
    assert parity["max_abs_logit_diff"] <= 1e-3
    assert parity["mask_dice"]["liver"] >= 0.999


def test_onnx_file_is_opset_17_with_symbolic_dims(bundle: OnnxBundle) -> None:
    import onnx

    model = onnx.load(str(bundle.model_path))
    assert {o.domain: o.version for o in model.opset_import}.get("", 0) >= 17
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == ["batch", 3, "height", "width"]
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


@pytest.mark.parametrize("shape", [(1, 3, 16, 16), (5, 3, 24, 36)])
def test_dynamic_batch_and_size_match_torch(bundle: OnnxBundle, export_student: StudentCheckpoint,
                                            shape: tuple[int, ...]) -> None:
    import torch

    from edgemed.models import load_student

    x = np.random.default_rng(0).random(shape, dtype=np.float32)
    with OrtSession(bundle.model_path, threads=1) as session:
        got = session.run({"image": x})["logits"]
    with torch.inference_mode():
        ref = load_student(export_student)(torch.from_numpy(x)).numpy()
    assert got.shape == (shape[0], 2, *shape[2:])
    np.testing.assert_allclose(got, ref, atol=1e-4)


def test_fixed_batch_export(export_student: StudentCheckpoint, tmp_path: Path) -> None:
    fixed = to_onnx(export_student, tmp_path / "b1", OnnxExportConfig(dynamic_batch=False, simplify=False))
    assert fixed.inputs[0].shape == (1, 3, "height", "width")
    assert fixed.parity["passed"] and fixed.metadata["export"]["simplified"] is False


def test_fp16_export_halves_the_file_and_keeps_float32_io(bundle: OnnxBundle, export_student: StudentCheckpoint,
                                                          tmp_path: Path) -> None:
    import onnx

    half = to_onnx(export_student, tmp_path / "fp16", OnnxExportConfig(precision="fp16"))
    assert half.precision == "fp16"
    assert half.model_path.stat().st_size < 0.6 * bundle.model_path.stat().st_size
    assert half.inputs[0].dtype == "float32" and half.outputs[0].dtype == "float32"
    model = onnx.load(str(half.model_path))
    assert {t.data_type for t in model.graph.initializer if t.dims and len(t.dims) == 4} == {onnx.TensorProto.FLOAT16}
    assert half.parity["tolerance"] == {"max_abs_logit_diff": 5e-2, "min_mask_dice": 0.99}
    assert 0 < half.parity["max_abs_logit_diff"] < 5e-2  # fp16 rounding, within its tolerance
    assert min(half.parity["mask_dice"].values()) >= 0.99
    with OrtSession(half.model_path) as session:  # the runtime feeds it float32 like any bundle
        x = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
        assert session.run({"image": x})["logits"].dtype == np.float32


def test_parity_on_given_scans_and_paths(export_student: StudentCheckpoint, tmp_path: Path) -> None:
    ct, _ = make_phantom(5, SMALL)
    path = tmp_path / "scan.nii.gz"
    write_nifti(make_phantom(6, SMALL)[0], path)
    out = to_onnx(str(export_student.path), tmp_path / "b", OnnxExportConfig(parity_volumes=(ct, path)))
    assert out.parity["volumes"] == ["phantom-5", "scan.nii.gz"]
    assert out.parity["slices"] == 2 * SMALL.shape[2]


def test_broken_graph_raises_parity_error_and_writes_nothing(export_student: StudentCheckpoint, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx

    from edgemed.export import _onnx

    real_simplify = _onnx._simplify

    def corrupt(model: onnx.ModelProto) -> onnx.ModelProto:
        model = real_simplify(model)
        # Nudge the head's bias, as a faulty fusion pass would: logits move by 0.05.
        bias = next(t for t in reversed(model.graph.initializer) if len(t.dims) == 1)
        values = onnx.numpy_helper.to_array(bias) + np.float32(0.05)
        bias.CopyFrom(onnx.numpy_helper.from_array(values.astype(np.float32), bias.name))
        return model

    monkeypatch.setattr(_onnx, "_simplify", corrupt)
    with pytest.raises(ParityError, match=r"max \|Δlogit\| = 0\.05.*phantom-0, slice \d+"):
        to_onnx(export_student, tmp_path / "broken")
    assert not (tmp_path / "broken").exists()
    assert not list(tmp_path.iterdir())  # no temp leftovers beside it either


def test_impossible_mask_tolerance_names_the_organ(export_student: StudentCheckpoint, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from edgemed.export import _parity

    real = _parity.measure_parity

    def flip_some(*args, **kwargs):  # type: ignore[no-untyped-def]
        result = real(*args, **kwargs)
        result.mask_dice = {"liver": 0.98}
        return result

    monkeypatch.setattr("edgemed.export._onnx.measure_parity", flip_some)
    with pytest.raises(ParityError, match="liver agree only to Dice 0.98"):
        to_onnx(export_student, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_existing_bundle_survives_a_failed_export(bundle: OnnxBundle, export_student: StudentCheckpoint,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from edgemed.export import _parity

    real = _parity.measure_parity

    def drift(*args, **kwargs):  # type: ignore[no-untyped-def]
        result = real(*args, **kwargs)
        result.max_abs_logit_diff = 0.25
        return result

    monkeypatch.setattr("edgemed.export._onnx.measure_parity", drift)
    before = read_manifest(bundle.path).digest
    with pytest.raises(ParityError, match="0.25"):
        to_onnx(export_student, bundle.path, OnnxExportConfig(parity_max_slices=4), overwrite=True)
    assert read_manifest(bundle.path).digest == before


@pytest.mark.parametrize("kwargs, match", [
    ({"opset": 16}, "opset=16"),
    ({"opset": 99}, "opset=99"),
    ({"max_abs_logit_diff": -1.0}, "max_abs_logit_diff"),
    ({"min_mask_dice": 1.5}, "min_mask_dice"),
    ({"parity_volumes": ()}, "parity_volumes is empty"),
    ({"parity_volumes": (3,)}, "holds a int"),
    ({"parity_max_slices": 0}, "parity_max_slices"),
    ({"precision": "int8"}, "edgemed quantize"),
])
def test_config_validates_itself(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        OnnxExportConfig(**kwargs)  # type: ignore[arg-type]


def test_single_path_is_accepted_as_parity_volumes(tmp_path: Path) -> None:
    assert OnnxExportConfig(parity_volumes=str(tmp_path / "a.nii.gz")).parity_volumes == (str(tmp_path / "a.nii.gz"),)  # type: ignore[arg-type]
