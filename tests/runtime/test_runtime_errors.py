"""Bad inputs, altered bundles and unknown backends give edgemed errors that say what to do."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from edgemed.artifacts import write_artifact
from edgemed.errors import ArtifactError, BackendError, ConfigError, InputError, MissingDependencyError
from edgemed.io import Volume
from edgemed.runtime import OnnxBundle, Segmenter, load, open_session
from edgemed.runtime.backends.ort import OrtSession


@pytest.fixture(scope="module")
def seg(phantom_bundle: OnnxBundle) -> Segmenter:
    return load(phantom_bundle, backend="ort", threads=1)


@pytest.fixture()
def bundle_copy(phantom_bundle: OnnxBundle, tmp_path: Path) -> Path:
    return Path(shutil.copytree(phantom_bundle.path, tmp_path / "copy.edgemed"))


def _ct(array: np.ndarray, modality: str = "CT") -> Volume:
    return Volume(array, np.diag([8.0, 8.0, 10.0, 1.0]), modality, "test")


def test_numpy_array_instead_of_volume(seg: Segmenter) -> None:
    with pytest.raises(InputError, match=r"take an edgemed.io.Volume.*ndarray of shape \(4, 4\).*read_volume"):
        seg.segment(np.zeros((4, 4), dtype=np.float32))  # type: ignore[arg-type]
    with pytest.raises(InputError, match="Volume"):
        seg.predict(np.zeros((8, 8, 8), dtype=np.float32))  # type: ignore[arg-type]


def test_non_3d_and_empty_volumes_are_refused() -> None:
    with pytest.raises(InputError, match="3D"):
        _ct(np.zeros((8, 8), dtype=np.float32))
    with pytest.raises(InputError, match="empty"):
        _ct(np.zeros((0, 8, 8), dtype=np.float32))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_voxels(seg: Segmenter, bad: float) -> None:
    array = np.full((16, 16, 6), -100.0, dtype=np.float32)
    array[3, 4, 2] = bad
    with pytest.raises(InputError, match="1 voxels are NaN or infinite"):
        seg.segment(_ct(array))


@pytest.mark.parametrize("modality", ["MR", "SEG"])
def test_wrong_modality(seg: Segmenter, modality: str) -> None:
    with pytest.raises(InputError, match=f"is '{modality}'.*segments CT scans.*modality='CT'"):
        seg.segment(_ct(np.zeros((16, 16, 6), dtype=np.float32), modality))


def test_non_numeric_voxels_and_broken_affine(seg: Segmenter) -> None:
    with pytest.raises(InputError, match="not numeric"):
        seg.segment(_ct(np.zeros((16, 16, 6), dtype=bool)))
    flat = Volume(np.zeros((16, 16, 6), dtype=np.float32), np.diag([8.0, 0.0, 10.0, 1.0]), "CT", "flat")
    with pytest.raises(InputError, match="spacing"):
        seg.segment(flat)


@pytest.mark.parametrize("batch_size", [0, -3, 2.5])
def test_bad_batch_size(seg: Segmenter, batch_size: object) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        seg.segment(_ct(np.zeros((16, 16, 6), dtype=np.float32)), batch_size=batch_size)  # type: ignore[arg-type]


def test_tiny_volume_still_segments(seg: Segmenter) -> None:
    out = seg.segment(_ct(np.full((1, 1, 1), 50.0, dtype=np.float32)))
    assert out.shape == (1, 1, 1)


def test_altered_model_file_is_refused(bundle_copy: Path) -> None:
    with open(bundle_copy / "model.onnx", "r+b") as fh:
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ArtifactError, match="'model.onnx' was altered"):
        load(bundle_copy)


def test_missing_model_file_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / "model.onnx").unlink()
    with pytest.raises(ArtifactError, match="'model.onnx' is missing"):
        load(bundle_copy)


def test_edited_manifest_is_refused(bundle_copy: Path) -> None:
    manifest = json.loads((bundle_copy / "manifest.json").read_text())
    manifest["files"]["model.onnx"] = "0" * 64
    (bundle_copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ArtifactError, match="altered"):
        load(bundle_copy)


def test_not_a_bundle(phantom_student, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ArtifactError, match="is a 'student' artifact, but a 'bundle'"):
        load(phantom_student.path)
    with pytest.raises(ArtifactError, match="not an artifact directory"):
        load(tmp_path / "nowhere")


def test_bundle_opened_earlier_is_reverified(phantom_bundle: OnnxBundle, bundle_copy: Path) -> None:
    opened = OnnxBundle.load(bundle_copy)
    (bundle_copy / "model.onnx").write_bytes(b"not a model")
    with pytest.raises(ArtifactError, match="altered"):
        load(opened)


def test_garbage_model_with_valid_hashes_is_a_backend_error(phantom_bundle: OnnxBundle, tmp_path: Path) -> None:
    write_artifact(tmp_path / "junk", kind="bundle", schema_version=1, payload={"model.onnx": b"not an onnx model"},
                   metadata=phantom_bundle.metadata)
    for backend in ("ort", "openvino"):
        with pytest.raises(BackendError, match="could not (load|compile)"):
            load(tmp_path / "junk", backend=backend)


def test_incomplete_metadata_is_an_artifact_error(phantom_bundle: OnnxBundle, tmp_path: Path) -> None:
    meta = phantom_bundle.metadata
    del meta["preprocess"]
    write_artifact(tmp_path / "b", kind="bundle", schema_version=1,
                   payload={"model.onnx": phantom_bundle.model_path.read_bytes()}, metadata=meta)
    with pytest.raises(ArtifactError, match="lacks.*preprocess"):
        load(tmp_path / "b")


def test_unknown_backend_and_bad_threads(phantom_bundle: OnnxBundle) -> None:
    with pytest.raises(ConfigError, match="unknown backend 'openvin'. Did you mean 'openvino'"):
        load(phantom_bundle, backend="openvin")
    with pytest.raises(ConfigError, match="threads=0"):
        load(phantom_bundle, threads=0)


def test_missing_backend_names_the_extra(phantom_bundle: OnnxBundle, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "openvino", None)  # makes `import openvino` fail as if not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'edgemed\[openvino\]'"):
        load(phantom_bundle, backend="openvino")


def test_session_refuses_a_bad_feed(phantom_bundle: OnnxBundle) -> None:
    with OrtSession(phantom_bundle.model_path, threads=1) as session:
        with pytest.raises(InputError, match="unknown: \\['ct'\\], missing: \\['image'\\]"):
            session.run({"ct": np.zeros((1, 3, 8, 8), np.float32)})
        with pytest.raises(InputError, match="needs size 3 on axis 1"):
            session.run({"image": np.zeros((1, 4, 8, 8), np.float32)})
        with pytest.raises(InputError, match="4 dimensions"):
            session.run({"image": np.zeros((3, 8, 8), np.float32)})
    with pytest.raises(BackendError, match="closed"):
        session.run({"image": np.zeros((1, 3, 8, 8), np.float32)})
    with open_session("openvino", phantom_bundle.model_path, threads=1) as ov_session:
        with pytest.raises(InputError, match="needs size 3"):
            ov_session.run({"image": np.zeros((1, 5, 8, 8), np.float32)})


def test_auto_without_any_backend(phantom_bundle: OnnxBundle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("edgemed.runtime.backends.importlib.util.find_spec", lambda name: None)
    with pytest.raises(MissingDependencyError, match=r"edgemed\[runtime\].*edgemed\[openvino\]"):
        load(phantom_bundle, backend="auto")


def test_manifest_that_contradicts_the_model(phantom_bundle: OnnxBundle, tmp_path: Path) -> None:
    meta = phantom_bundle.metadata
    meta["organs"] = [*meta["organs"], {"channel": 2, "label_id": 1, "name": "spleen"}]
    write_artifact(tmp_path / "b", kind="bundle", schema_version=1,
                   payload={"model.onnx": phantom_bundle.model_path.read_bytes()}, metadata=meta)
    with pytest.raises(ArtifactError, match="outputs 2 classes but the manifest names 2 organs"):
        load(tmp_path / "b", backend="ort", threads=1)
