"""Artifact manifests: hashes, kinds, schema versions, lineage, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgemed.artifacts import MANIFEST, PreprocessSpec, read_manifest, write_artifact
from edgemed.errors import ArtifactError, ConfigError


def _write(path: Path, **kw: object) -> None:
    write_artifact(path, kind="student", schema_version=1, payload={"a.bin": b"abc", "b.json": b"{}"},
                   metadata={"organ": "liver", "spacing": (2.0, 2.0)}, **kw)  # type: ignore[arg-type]


def test_roundtrip_and_lineage(tmp_path: Path) -> None:
    _write(tmp_path / "art", parent="f" * 64)
    m = read_manifest(tmp_path / "art", kind="student")
    assert m.metadata == {"organ": "liver", "spacing": [2.0, 2.0]}
    assert m.parent == "f" * 64
    assert set(m.files) == {"a.bin", "b.json"}
    raw = json.loads((tmp_path / "art" / MANIFEST).read_text())
    assert raw["digest"] == m.digest and len(m.digest) == 64


@pytest.mark.parametrize("victim", ["a.bin", "b.json"])
def test_altered_or_missing_file_is_refused(tmp_path: Path, victim: str) -> None:
    _write(tmp_path / "art")
    target = tmp_path / "art" / victim
    target.write_bytes(target.read_bytes() + b"x")
    with pytest.raises(ArtifactError, match="was altered"):
        read_manifest(tmp_path / "art")
    target.unlink()
    with pytest.raises(ArtifactError, match="is missing"):
        read_manifest(tmp_path / "art")


def test_wrong_kind_schema_and_damage(tmp_path: Path) -> None:
    _write(tmp_path / "art")
    with pytest.raises(ArtifactError, match="'onnx' artifact is needed"):
        read_manifest(tmp_path / "art", kind="onnx")
    with pytest.raises(ArtifactError, match="schema version 1"):
        read_manifest(tmp_path / "art", schema_versions=(2,))
    (tmp_path / "art" / MANIFEST).write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_manifest(tmp_path / "art")
    with pytest.raises(ArtifactError, match="not an artifact directory"):
        read_manifest(tmp_path / "nothing")


def test_failed_write_leaves_the_old_artifact(tmp_path: Path) -> None:
    _write(tmp_path / "art")
    before = read_manifest(tmp_path / "art").digest
    with pytest.raises(ArtifactError, match="not JSON-serialisable"):
        write_artifact(tmp_path / "art", kind="student", schema_version=1, payload={"a.bin": b"new"},
                       metadata={"bad": object()}, overwrite=True)
    assert read_manifest(tmp_path / "art").digest == before
    assert [p.name for p in tmp_path.iterdir()] == ["art"]  # no temporary left behind


def test_preprocess_spec_validates_and_roundtrips() -> None:
    spec = PreprocessSpec(spacing_mm=[1.5, 1.5], window_hu=[-200, 300], context_slices=2)  # type: ignore[arg-type]
    assert spec.in_channels == 5
    assert PreprocessSpec.from_json(spec.to_json()) == spec
    with pytest.raises(ConfigError, match="window_hu"):
        PreprocessSpec(window_hu=(300.0, -200.0))
