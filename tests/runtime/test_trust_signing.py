"""Signed bundles: every byte of every file is covered, and the runtime refuses anything altered."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from _keys import make_keys

from edgemed.artifacts import (
    MANIFEST,
    SIGNATURE,
    TRUSTED_KEYS_ENV,
    generate_keypair,
    read_manifest,
    sign_artifact,
    verify_artifact,
)
from edgemed.cli import main
from edgemed.errors import ArtifactError, ConfigError
from edgemed.runtime import OnnxBundle, load


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_keys(tmp_path_factory.mktemp("keys"))


@pytest.fixture()
def signed(phantom_bundle: OnnxBundle, keys: dict[str, Path], tmp_path: Path) -> Path:
    path = tmp_path / "liver.edgemed"
    shutil.copytree(phantom_bundle.path, path)
    sign_artifact(path, keys["release"])
    return path


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset % len(data)] ^= 0x01
    path.write_bytes(bytes(data))


def test_signed_bundle_loads_with_its_key_and_segments(signed: Path, keys: dict[str, Path],
                                                       phantom_bundle: OnnxBundle, phantom_cts: list) -> None:
    with load(signed, backend="ort", threads=1, trusted_keys=[keys["release_pub"]]) as seg, \
            load(phantom_bundle.path, backend="ort", threads=1) as plain:
        np.testing.assert_array_equal(seg.segment(phantom_cts[0]).array, plain.segment(phantom_cts[0]).array)
    result = verify_artifact(signed, trusted_keys=[keys["release_pub"].parent])  # a directory of keys works too
    assert result.signed and result.key_id is not None and "verified" in result.summary()


def test_every_byte_flip_in_every_file_is_refused(signed: Path, keys: dict[str, Path]) -> None:
    """Flip one bit at 8 spread positions in each file of a signed bundle: each copy is refused."""
    names = sorted(p.name for p in signed.iterdir())
    assert {MANIFEST, SIGNATURE, "model.onnx"} <= set(names)
    for name in names:
        size = (signed / name).stat().st_size
        for offset in np.linspace(0, size - 1, 8).astype(int):
            copy = signed.parent / f"flip-{name}-{offset}"
            shutil.copytree(signed, copy)
            _flip(copy / name, int(offset))
            with pytest.raises(ArtifactError) as info:
                load(copy, backend="ort", threads=1, trusted_keys=[keys["release_pub"]])
            message = str(info.value)
            assert name in message or "signature" in message or "manifest" in message, (name, offset, message)
            shutil.rmtree(copy)


def test_unsigned_bundle_still_catches_altered_payload_and_manifest(phantom_bundle: OnnxBundle, tmp_path: Path) -> None:
    """Without keys, hashes still guard the payload, and content_sha256 guards the manifest's values."""
    model = tmp_path / "model"
    shutil.copytree(phantom_bundle.path, model)
    _flip(model / "model.onnx", 1000)
    with pytest.raises(ArtifactError, match="'model.onnx' was altered"):
        load(model, backend="ort", threads=1)
    meta = tmp_path / "meta"
    shutil.copytree(phantom_bundle.path, meta)
    manifest = json.loads((meta / MANIFEST).read_text())
    manifest["metadata"]["preprocess"]["window_hu"][1] += 100.0  # a wrong window: silently wrong masks
    (meta / MANIFEST).write_text(json.dumps(manifest, indent=2))
    with pytest.raises(ArtifactError, match="content_sha256"):
        load(meta, backend="ort", threads=1)


def test_untrusted_key_missing_signature_and_extra_files_are_refused(signed: Path, keys: dict[str, Path],
                                                                    phantom_bundle: OnnxBundle, tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not among the trusted keys"):
        load(signed, backend="ort", threads=1, trusted_keys=[keys["other_pub"]])
    unsigned = tmp_path / "unsigned"
    shutil.copytree(phantom_bundle.path, unsigned)
    with pytest.raises(ArtifactError, match="not signed.*edgemed sign"):
        load(unsigned, backend="ort", threads=1, trusted_keys=[keys["release_pub"]])
    (signed / "evil.onnx").write_bytes(b"\x00")
    with pytest.raises(ArtifactError, match="not covered by its manifest: evil.onnx"):
        verify_artifact(signed, trusted_keys=[keys["release_pub"]])
    with pytest.raises(ConfigError, match="no trusted public key"):
        verify_artifact(unsigned, require_signature=True)


def test_resigned_with_attackers_key_after_edit_is_refused(signed: Path, keys: dict[str, Path]) -> None:
    """Edit the manifest consistently (hashes and content checksum) and re-sign with another key."""
    _flip(signed / "model.onnx", 5000)
    manifest = json.loads((signed / MANIFEST).read_text())
    from edgemed.artifacts import sha256_file
    from edgemed.artifacts._manifest import CONTENT_SHA256, _content_sha256

    manifest["files"]["model.onnx"] = sha256_file(signed / "model.onnx")
    manifest[CONTENT_SHA256] = _content_sha256(manifest)
    (signed / MANIFEST).write_text(json.dumps(manifest, indent=2))
    read_manifest(signed)  # consistent: hashes alone cannot tell
    sign_artifact(signed, keys["other"])
    with pytest.raises(ArtifactError, match="not among the trusted keys"):
        load(signed, backend="ort", threads=1, trusted_keys=[keys["release_pub"]])


def test_trusted_keys_from_environment(signed: Path, keys: dict[str, Path], phantom_bundle: OnnxBundle,
                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TRUSTED_KEYS_ENV, str(keys["release_pub"]))
    load(signed, backend="ort", threads=1).close()
    unsigned = tmp_path / "unsigned"
    shutil.copytree(phantom_bundle.path, unsigned)
    with pytest.raises(ArtifactError, match="not signed"):
        load(unsigned, backend="ort", threads=1)


def test_cli_keygen_sign_verify(phantom_bundle: OnnxBundle, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = tmp_path / "b.edgemed"
    shutil.copytree(phantom_bundle.path, bundle)
    main(["keygen", "--private", str(tmp_path / "k.pem"), "--public", str(tmp_path / "k.pub.pem")])
    assert (tmp_path / "k.pem").stat().st_mode & 0o077 == 0, "private key must be owner-only"
    with pytest.raises(SystemExit) as info:
        main(["keygen", "--private", str(tmp_path / "k.pem"), "--public", str(tmp_path / "k.pub.pem")])
    assert info.value.code == 2
    main(["sign", str(bundle), "--key", str(tmp_path / "k.pem")])
    main(["verify", str(bundle), "--key", str(tmp_path / "k.pub.pem")])
    assert "signature by key" in capsys.readouterr().out
    _flip(bundle / "model.onnx", 77)
    with pytest.raises(SystemExit) as info:
        main(["verify", str(bundle), "--key", str(tmp_path / "k.pub.pem")])
    assert info.value.code == 1
    assert "REFUSED" in capsys.readouterr().err


def test_encrypted_private_key_needs_passphrase(tmp_path: Path, phantom_bundle: OnnxBundle,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub.pem", passphrase=b"correct horse")
    bundle = tmp_path / "b"
    shutil.copytree(phantom_bundle.path, bundle)
    with pytest.raises(ConfigError, match="EDGEMED_KEY_PASSPHRASE"):
        sign_artifact(bundle, tmp_path / "k.pem")
    monkeypatch.setenv("EDGEMED_KEY_PASSPHRASE", "correct horse")
    sign_artifact(bundle, tmp_path / "k.pem")
    verify_artifact(bundle, trusted_keys=[tmp_path / "k.pub.pem"])
