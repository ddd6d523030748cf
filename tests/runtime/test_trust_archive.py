"""Packed bundles: round trip, and safe extraction of hostile archives (traversal, links, bombs)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from edgemed.artifacts import extract_artifact, generate_keypair, pack_artifact, read_manifest, sign_artifact
from edgemed.cli import main
from edgemed.errors import ArtifactError
from edgemed.runtime import OnnxBundle, load


def _tar(path: Path, members: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return path


def _file(name: str) -> tarfile.TarInfo:
    return tarfile.TarInfo(name)


def test_pack_unpack_round_trip_signed(phantom_bundle: OnnxBundle, tmp_path: Path) -> None:
    import shutil

    bundle = tmp_path / "liver.edgemed"
    shutil.copytree(phantom_bundle.path, bundle)
    generate_keypair(tmp_path / "k.pem", tmp_path / "k.pub.pem")
    sign_artifact(bundle, tmp_path / "k.pem")
    main(["pack", str(bundle), "--out", str(tmp_path / "liver.tar.gz")])
    main(["unpack", str(tmp_path / "liver.tar.gz"), "--out", str(tmp_path / "device" / "liver.edgemed"),
          "--key", str(tmp_path / "k.pub.pem")])
    out = tmp_path / "device" / "liver.edgemed"
    assert read_manifest(out).digest == read_manifest(bundle).digest
    load(out, backend="ort", threads=1, trusted_keys=[tmp_path / "k.pub.pem"]).close()


@pytest.mark.parametrize("name, why", [
    ("b/../../evil.txt", "not a plain FOLDER/FILE"),
    ("/etc/evil.txt", "not a plain FOLDER/FILE"),
    ("b/sub/deep.txt", "not a plain FOLDER/FILE"),
    ("other/manifest.json", "outside the artifact's folder"),
])
def test_unsafe_member_names_are_refused(phantom_bundle: OnnxBundle, tmp_path: Path, name: str, why: str) -> None:
    good = (phantom_bundle.path / "manifest.json").read_bytes()
    archive = _tar(tmp_path / "a.tar", [(_file("b/manifest.json"), good), (_file(name), b"x")])
    with pytest.raises(ArtifactError, match=why):
        extract_artifact(archive, tmp_path / "out")
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "evil.txt").exists()


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE])
def test_links_and_special_files_are_refused(tmp_path: Path, kind: bytes) -> None:
    info = _file("b/model.onnx")
    info.type, info.linkname = kind, "/etc/passwd"
    archive = _tar(tmp_path / "a.tar", [(info, None)])
    with pytest.raises(ArtifactError, match="link|special file"):
        extract_artifact(archive, tmp_path / "out")


def test_size_and_member_limits_count_real_bytes(phantom_bundle: OnnxBundle, tmp_path: Path) -> None:
    # A highly compressible 64 MiB member (a "bomb" in a few kB of gzip): refused at the cap, mid-copy.
    bomb = tmp_path / "bomb.tar.gz"
    with tarfile.open(bomb, "w:gz") as tar:
        info = _file("b/model.onnx")
        info.size = 64 << 20
        tar.addfile(info, io.BytesIO(bytes(64 << 20)))
    assert bomb.stat().st_size < 1 << 20
    with pytest.raises(ArtifactError, match="more than 8 MiB"):
        extract_artifact(bomb, tmp_path / "out", max_bytes=8 << 20)
    many = _tar(tmp_path / "many.tar", [(_file(f"b/f{i}"), b"x") for i in range(70)])
    with pytest.raises(ArtifactError, match="more than 64 entries"):
        extract_artifact(many, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_tampered_or_foreign_archives_are_refused(phantom_bundle: OnnxBundle, tmp_path: Path) -> None:
    pack_artifact(phantom_bundle.path, tmp_path / "b.tar")
    data = bytearray((tmp_path / "b.tar").read_bytes())
    at = data.find(b"/model.onnx\x00") + 512 + 2000  # inside the model's bytes, past its tar header
    data[at] ^= 0xFF
    (tmp_path / "bad.tar").write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="altered"):
        extract_artifact(tmp_path / "bad.tar", tmp_path / "out")
    (tmp_path / "junk.tar").write_bytes(b"not a tar at all" * 100)
    with pytest.raises(ArtifactError, match="not a readable tar"):
        extract_artifact(tmp_path / "junk.tar", tmp_path / "out")
    assert not (tmp_path / "out").exists()
