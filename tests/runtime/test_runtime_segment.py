"""Segmenter on ONNX Runtime and OpenVINO gives the torch student's masks, on phantoms and a real CT."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from edgemed.artifacts import StudentCheckpoint
from edgemed.io import Volume
from edgemed.metrics import dice
from edgemed.runtime import OnnxBundle, Segmenter, Session, StageTimings, load

BACKENDS = ["ort", "openvino"]
TorchLabels = Callable[[StudentCheckpoint, Volume], np.ndarray]


def _agree(got: np.ndarray, ref: np.ndarray, label: int = 5) -> float:
    assert (ref == label).sum() > 50, "the reference mask is (nearly) empty: the comparison would be vacuous"
    return dice(got == label, ref == label)


@pytest.mark.parametrize("backend", BACKENDS)
def test_segment_matches_torch_on_phantoms(backend: str, phantom_bundle: OnnxBundle, phantom_student: StudentCheckpoint,
                                           phantom_cts: list[Volume], torch_labels: TorchLabels) -> None:
    with load(phantom_bundle.path, backend=backend, threads=1) as seg:
        assert isinstance(seg.session, Session)
        for ct in phantom_cts:
            labels = seg.segment(ct)
            assert labels.array.dtype == np.uint8 and labels.modality == "SEG"
            assert labels.shape == ct.shape and np.array_equal(labels.affine, ct.affine)
            assert set(np.unique(labels.array)) <= {0, 5}
            assert _agree(labels.array, torch_labels(phantom_student, ct)) >= 0.999


@pytest.mark.realdata
@pytest.mark.parametrize("backend", BACKENDS)
def test_segment_matches_torch_on_real_ct(backend: str, real_bundle: OnnxBundle, real_student: StudentCheckpoint,
                                          real_ct: Volume, torch_labels: TorchLabels) -> None:
    ref = torch_labels(real_student, real_ct)
    with load(real_bundle, backend=backend, threads=1) as seg:
        labels = seg.segment(real_ct, batch_size=32)
        timings = seg.last_timings
    assert labels.shape == real_ct.shape and labels.array.dtype == np.uint8
    assert _agree(labels.array, ref) >= 0.999
    assert isinstance(timings, StageTimings) and timings.slices == real_ct.shape[2] and timings.batches == 4
    assert timings.inference_ms > 0 and timings.total_ms >= timings.inference_ms


def test_predict_gives_probabilities_close_to_torch(phantom_bundle: OnnxBundle, phantom_student: StudentCheckpoint,
                                                     phantom_cts: list[Volume]) -> None:
    from edgemed.models import load_student, predict_volume

    ct = phantom_cts[0]
    ref = predict_volume(load_student(phantom_student), ct, phantom_student.preprocess)
    with load(phantom_bundle, backend="ort", threads=1) as seg:
        probs = seg.predict(ct)
    assert probs.dtype == np.float32 and probs.shape == (2, *ct.shape)
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs, ref, atol=1e-5)


def test_batch_size_does_not_change_the_mask(phantom_bundle: OnnxBundle, phantom_cts: list[Volume]) -> None:
    with load(phantom_bundle, backend="ort", threads=1) as seg:
        one = seg.segment(phantom_cts[1], batch_size=1)
        assert seg.last_timings is not None and seg.last_timings.batches == phantom_cts[1].shape[2]
        many = seg.segment(phantom_cts[1], batch_size=64)
        assert seg.last_timings.batches == 1
    np.testing.assert_array_equal(one.array, many.array)


def test_fixed_batch_bundle_pads_the_last_batch(phantom_student: StudentCheckpoint, phantom_cts: list[Volume],
                                                tmp_path, torch_labels: TorchLabels) -> None:  # type: ignore[no-untyped-def]
    from edgemed.export import OnnxExportConfig, to_onnx

    fixed = to_onnx(phantom_student, tmp_path / "b1", OnnxExportConfig(dynamic_batch=False, parity_max_slices=4))
    with load(fixed, backend="ort", threads=1) as seg:
        labels = seg.segment(phantom_cts[0], batch_size=16)
    assert _agree(labels.array, torch_labels(phantom_student, phantom_cts[0])) >= 0.999


@pytest.mark.parametrize("backend", BACKENDS)
def test_threads_share_one_segmenter(backend: str, phantom_bundle: OnnxBundle, phantom_cts: list[Volume]) -> None:
    with load(phantom_bundle, backend=backend, threads=1) as seg:
        serial = [seg.segment(ct, batch_size=8).array for ct in phantom_cts]
        jobs = [ct for _ in range(4) for ct in phantom_cts]
        with ThreadPoolExecutor(max_workers=4) as pool:
            parallel = list(pool.map(lambda ct: seg.segment(ct, batch_size=8).array, jobs))
    for i, got in enumerate(parallel):
        np.testing.assert_array_equal(got, serial[i % len(phantom_cts)])


def test_auto_backend_and_default_threads(phantom_bundle: OnnxBundle, phantom_cts: list[Volume]) -> None:
    seg = load(phantom_bundle)
    assert isinstance(seg, Segmenter) and seg.backend == "ort"
    with seg:
        assert seg.session.threads >= 1  # type: ignore[attr-defined]
        assert seg.segment(phantom_cts[2]).shape == phantom_cts[2].shape


def test_largest_component_postprocess(phantom_bundle: OnnxBundle, phantom_cts: list[Volume], tmp_path) -> None:  # type: ignore[no-untyped-def]
    import json
    import shutil

    from edgemed.artifacts import write_artifact
    from edgemed.runtime import component_labels

    meta = dict(phantom_bundle.metadata)
    meta["postprocess"] = {"argmax": True, "largest_component": True}
    lcc = tmp_path / "lcc.edgemed"
    shutil.copy(phantom_bundle.model_path, tmp_path / "model.onnx")
    write_artifact(lcc, kind="bundle", schema_version=1, payload={"model.onnx": tmp_path / "model.onnx"},
                   metadata=json.loads(json.dumps(meta)), parent=phantom_bundle.manifest.parent)
    # Two phantoms stacked along z with air between: two livers, two components; the cleanup keeps one.
    base = phantom_cts[0]
    air = np.full((*base.shape[:2], 6), -1000.0, dtype=np.float32)
    ct = Volume(np.concatenate([base.array, air, base.array[:, :, ::-1]], axis=2), base.affine, "CT", "two-livers")
    with load(lcc, backend="ort", threads=1) as seg, load(phantom_bundle, backend="ort", threads=1) as plain:
        cleaned = seg.segment(ct).array
        raw = plain.segment(ct).array
    assert component_labels(raw == 5)[1] >= 2
    assert component_labels(cleaned == 5)[1] == 1
    assert np.all((cleaned == 5) <= (raw == 5)) and 0 < (cleaned == 5).sum() < (raw == 5).sum()
