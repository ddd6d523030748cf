"""Verify what you use (issue 18, item 5): the bytes whose signature is checked are the bytes used.

A writer swaps manifest.json between the signed one and a tampered one (another organ label id,
its content_sha256 recomputed, so only the signature can tell) while the main thread loads the
bundle again and again: every load is refused or yields the signed organ, never the tampered one.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from _hostile import copy_bundle

from edgemed.artifacts import MANIFEST, TRUSTED_KEYS_ENV, Manifest, read_manifest, sign_artifact
from edgemed.errors import ArtifactError, ConfigError
from edgemed.runtime import OnnxBundle, load

LOADS = 60


def _tampered_manifest(bundle: Path, label_id: int) -> bytes:
    """The bundle's manifest with organ 1's label id changed and its content checksum made to match."""
    m = read_manifest(bundle)
    body = json.loads(json.dumps(m.to_json()))
    body["metadata"]["organs"][0]["label_id"] = label_id
    forged = Manifest(kind=m.kind, schema_version=m.schema_version, edgemed_version=m.edgemed_version, files=m.files,
                      parent=m.parent, metadata=body["metadata"], created_utc=m.created_utc)
    return (json.dumps(forged.to_json(), indent=2) + "\n").encode()


@pytest.fixture()
def signed(phantom_bundle: OnnxBundle, keys: dict[str, Path], tmp_path: Path) -> Path:
    path = copy_bundle(phantom_bundle, tmp_path / "liver.edgemed")
    sign_artifact(path, keys["release"])
    return path


def test_manifest_swapped_during_load_never_yields_the_tampered_organ(signed: Path, keys: dict[str, Path]) -> None:
    good = (signed / MANIFEST).read_bytes()
    signed_id = read_manifest(signed).to_json()["metadata"]["organs"][0]["label_id"]
    bad = _tampered_manifest(signed, 99)
    stop = threading.Event()

    def swap() -> None:
        tmp = signed.parent / "manifest.swap"
        i = 0
        while not stop.is_set():
            tmp.write_bytes(bad if i % 2 else good)
            os.replace(tmp, signed / MANIFEST)  # atomic: a reader sees one whole manifest or the other
            i += 1

    writer = threading.Thread(target=swap, daemon=True)
    writer.start()
    outcomes = {"refused": 0, "signed": 0}
    try:
        for _ in range(LOADS):
            try:
                seg = load(signed, backend="ort", threads=1, trusted_keys=[keys["release_pub"]])
            except ArtifactError:
                outcomes["refused"] += 1
                continue
            with seg:
                ids = [o.label_id for o in seg.organs]
                assert ids == [signed_id], f"a tampered manifest was used: organs {ids}"
                assert [o.label_id for o in seg.bundle.meta.organs] == [signed_id]
            outcomes["signed"] += 1
    finally:
        stop.set()
        writer.join()
    assert outcomes["refused"] + outcomes["signed"] == LOADS
    assert outcomes["refused"] > 0, "the writer never won a race; the test did not exercise anything"


def test_model_swapped_after_verification_is_never_run(signed: Path, keys: dict[str, Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The model bytes handed to the backend are the bytes whose sha256 was checked, not a later read."""
    import edgemed.runtime._segmenter as segmenter

    real_verify = segmenter.verify_artifact
    model = signed / "model.onnx"
    original = model.read_bytes()

    def verify_then_swap(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        result = real_verify(*args, **kwargs)
        model.write_bytes(original[:-16] + bytes(16))  # swapped right after the check
        return result

    monkeypatch.setattr(segmenter, "verify_artifact", verify_then_swap)
    with pytest.raises(ArtifactError, match="altered"):
        load(signed, backend="ort", threads=1, trusted_keys=[keys["release_pub"]])


def test_empty_trusted_keys_env_is_a_config_error(signed: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for value in ("", "   ", os.pathsep):
        monkeypatch.setenv(TRUSTED_KEYS_ENV, value)
        with pytest.raises(ConfigError, match="set but empty"):
            load(signed, backend="ort", threads=1)


def test_cli_empty_trusted_keys_env(signed: Path, ct: Path, tmp_path: Path) -> None:
    env = {**os.environ, TRUSTED_KEYS_ENV: ""}
    import subprocess
    import sys

    for args in (["verify", str(signed)], ["segment", str(signed), str(ct), "--out",
                                            str(tmp_path / "m.nii.gz")]):
        res = subprocess.run([sys.executable, "-m", "edgemed", *args], capture_output=True, text=True, env=env,
                             timeout=300)
        assert res.returncode == 2, res.stderr
        assert "set but empty" in res.stderr and "Traceback" not in res.stderr
        assert len(res.stderr.strip().splitlines()) == 1, res.stderr


@pytest.fixture()
def ct(tmp_path: Path) -> Path:
    from edgemed.io import write_nifti
    from edgemed.phantom import PhantomConfig, make_phantom

    return write_nifti(make_phantom(3, PhantomConfig(shape=(48, 40, 24), spacing_mm=(8.0, 8.0, 10.0)))[0],
                       tmp_path / "ct.nii.gz")


@pytest.mark.parametrize("command", ["segment", "verify"])
def test_cli_trusted_key(command: str, signed: Path, phantom_bundle: OnnxBundle, keys: dict[str, Path], ct: Path,
                         tmp_path: Path, run_cli) -> None:  # type: ignore[no-untyped-def]
    unsigned = copy_bundle(phantom_bundle, tmp_path / "unsigned.edgemed")
    env_free = {k: v for k, v in os.environ.items() if k != TRUSTED_KEYS_ENV}

    def run(bundle: Path, key: Path) -> tuple[int, str, str]:
        import subprocess
        import sys

        tail = ["--out", str(tmp_path / f"mask-{bundle.name}-{key.stem}.nii.gz")] if command == "segment" else []
        args = [command, str(bundle), *([str(ct)] if command == "segment" else []), *tail, "--trusted-key", str(key)]
        res = subprocess.run([sys.executable, "-m", "edgemed", *args], capture_output=True, text=True, env=env_free,
                             timeout=300)
        return res.returncode, res.stdout, res.stderr

    rc, out, err = run(unsigned, keys["release_pub"])
    assert rc == 1 and "not signed" in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    rc, out, err = run(signed, keys["other_pub"])
    assert rc == 1 and "not among the trusted keys" in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    rc, out, err = run(signed, keys["release_pub"])
    assert rc == 0, err
    assert ("wrote" in out) if command == "segment" else ("verified" in out)
