"""Artifacts written by edgemed 0.1.0 (tests/assets/release-0.1.0, see make_assets.py) still load and run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edgemed.artifacts import (BundleMeta, EngineMeta, OnnxBundle, StudentCheckpoint, StudentMeta, open_bundle,
                               read_manifest)
from edgemed.errors import ArtifactError
from edgemed.phantom import PhantomConfig, make_phantom
from edgemed.runtime import load

OLD = Path(__file__).resolve().parents[1] / "assets" / "release-0.1.0"
BUNDLES = ("liver.edgemed", "liver-int8.edgemed")


def _raw(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())["metadata"]


def test_old_student_parses_into_typed_metadata_and_round_trips() -> None:
    ckpt = StudentCheckpoint.load(OLD / "student")
    meta = ckpt.meta
    assert [o.name for o in meta.organs] == ["liver", "spleen"] and meta.organs[0].channel == 1
    assert meta.label_map_name == "totalsegmentator"
    assert meta.preprocess.spacing_mm == (8.0, 8.0) and meta.preprocess.context_slices == 1
    assert set(meta.validation.dice) == {"liver", "spleen"} and meta.validation.holdout_kind == "scans"
    assert meta.training.epochs == 3 and meta.training.parameters and meta.training.extra["torch"]
    assert meta.to_json() == _raw(OLD / "student")  # nothing dropped, nothing added


@pytest.mark.parametrize("name", BUNDLES)
def test_old_bundles_parse_and_round_trip(name: str) -> None:
    bundle = open_bundle(OLD / name)
    assert isinstance(bundle, OnnxBundle) and isinstance(bundle.meta, BundleMeta)
    assert bundle.meta.to_json() == _raw(OLD / name)
    assert bundle.inputs[0].shape[1] == bundle.preprocess.in_channels == 3
    assert bundle.meta.student.digest == StudentCheckpoint.load(OLD / "student").manifest.digest
    assert bundle.validation_dice == StudentCheckpoint.load(OLD / "student").meta.validation.dice


def test_old_quantized_bundle_keeps_its_quantization_record() -> None:
    meta = OnnxBundle.load(OLD / "liver-int8.edgemed").meta
    assert meta.preferred_backend == "ort" and meta.quantization is not None
    assert meta.quantization["chosen_precision"] == meta.precision and meta.quantization["reason"]


@pytest.mark.parametrize("name", BUNDLES)
def test_old_bundles_segment_exactly_as_the_release_did(name: str) -> None:
    golden = np.load(OLD / "masks.npz")
    probe = make_phantom(int(golden["probe_seed"]), PhantomConfig(shape=(40, 32, 16), spacing_mm=(8.0, 8.0, 10.0)))[0]
    with load(OLD / name, backend="ort", threads=1) as seg:
        mask = seg.segment(probe).array
    expected = golden[name.replace(".", "_").replace("-", "_")]
    assert mask.any() and np.array_equal(mask, expected)


def test_engine_metadata_round_trips_through_the_typed_record() -> None:
    """An engine's metadata (as build_engine writes it) parses and writes back unchanged."""
    raw = {**_raw(OLD / "liver.edgemed"), "format": "tensorrt", "model": "model.engine", "precision": "fp16",
           "precision_requested": "fp16", "precision_built": "fp16", "fallback": None, "tensorrt_version": "10.3.0",
           "cuda_version": "12.6", "gpu_name": "Orin", "compute_capability": [8, 7], "dla_core": None,
           "version_compatible": False, "hardware_compatibility": "none", "timing_cache": None,
           "shape_profiles": {"image": {"min": [1, 3, 8, 8], "opt": [8, 3, 8, 8], "max": [16, 3, 8, 8]}},
           "layer_precision_counts": {"fp16": 3}, "build_seconds": 1.5, "preferred_backend": "trt"}
    meta = EngineMeta.from_json(raw)
    assert meta.to_json() == raw
    assert meta.build.compute_capability == (8, 7) and meta.build.dla_core is None


def test_a_malformed_record_names_the_record(tmp_path: Path) -> None:
    raw = _raw(OLD / "liver.edgemed")
    with pytest.raises(ArtifactError, match="'organs'"):
        BundleMeta.from_json({**raw, "organs": [{"channel": "x"}]})
    with pytest.raises(ArtifactError, match="lacks 'preprocess'"):
        StudentMeta.from_json({k: v for k, v in _raw(OLD / "student").items() if k != "preprocess"})
    assert read_manifest(OLD / "student").kind == "student"
