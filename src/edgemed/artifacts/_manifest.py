"""Artifact directories: payload files plus a manifest.json with kind, schema, hashes and lineage.

Stdlib + numpy only (device software reads manifests without torch).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from edgemed._atomic import atomic_dir
from edgemed.errors import ArtifactError

__all__ = ["MANIFEST", "Manifest", "combined_sha256", "parse_manifest", "read_manifest", "read_manifest_bytes",
           "read_payload", "sha256_file", "write_artifact"]

MANIFEST = "manifest.json"
SIGNATURE = "signature.json"  # beside the manifest, outside what it lists (see _signing)
# The manifest's own checksum: catches a damaged manifest.json (a flipped byte in a number or name),
# which the payload hashes cannot. It is not a signature (anyone can recompute it); see _signing.
CONTENT_SHA256 = "content_sha256"
_CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def combined_sha256(files: Iterable[Path], root: Path) -> str:
    """One hash over several files: sha256 of the sorted lines "<path relative to root> <sha256>".

    A single file hashes as itself, so a lone checkpoint's identity matches `sha256sum`.
    """
    files = sorted(files, key=lambda f: f.relative_to(root).as_posix())
    if len(files) == 1:
        return sha256_file(files[0])
    lines = "".join(f"{f.relative_to(root).as_posix()} {sha256_file(f)}\n" for f in files)
    return hashlib.sha256(lines.encode()).hexdigest()


@dataclass(frozen=True)
class Manifest:
    """The manifest of an artifact directory.

    Attributes:
        kind: "student", "onnx", "engine", "bundle" or "report".
        schema_version: Version of that kind's layout; readers refuse versions they don't know.
        edgemed_version: The edgemed that wrote it.
        files: Payload file name → sha256.
        parent: The parent artifact's `digest` (lineage teacher → student → ONNX → engine), or None.
        metadata: Kind-specific content (organ, preprocessing, scores...), JSON-ready.
        created_utc: ISO-8601 creation time.
    """

    kind: str
    schema_version: int
    edgemed_version: str
    files: Mapping[str, str]
    parent: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    created_utc: str = ""

    @property
    def digest(self) -> str:
        """sha256 over kind, schema and file hashes: the artifact's identity in lineage records."""
        body = json.dumps({"kind": self.kind, "schema": self.schema_version, "files": dict(sorted(self.files.items()))},
                          sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()

    def to_json(self) -> dict[str, Any]:
        """The manifest.json content, ending with `content_sha256`: a checksum of everything above it."""
        body = {
            "kind": self.kind,
            "schema_version": self.schema_version,
            "edgemed_version": self.edgemed_version,
            "created_utc": self.created_utc,
            "digest": self.digest,
            "parent": self.parent,
            "files": dict(sorted(self.files.items())),
            "metadata": dict(self.metadata),
        }
        return {**body, CONTENT_SHA256: _content_sha256(body)}


def _content_sha256(body: Mapping[str, Any]) -> str:
    """sha256 of a manifest's canonical JSON (sorted keys, no whitespace), `content_sha256` excluded."""
    canonical = json.dumps({k: v for k, v in body.items() if k != CONTENT_SHA256}, sort_keys=True,
                           separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def write_artifact(
    path: str | os.PathLike[str],
    *,
    kind: str,
    schema_version: int,
    payload: Mapping[str, bytes | Path],
    metadata: Mapping[str, Any],
    parent: str | None = None,
    overwrite: bool = False,
) -> Manifest:
    """Write an artifact directory atomically: payload files, then manifest.json with their hashes.

    Args:
        payload: File name → bytes to write, or an existing file to move in.
        parent: The parent artifact's digest (lineage).
        overwrite: Replace an existing artifact of the same kind at `path` (see `check_output`).

    Returns:
        The written manifest.

    Raises:
        OutputError: `path` holds something else, or the same kind without `overwrite`, or the
            disk refused the write.
    """
    from edgemed import __version__
    from edgemed.artifacts._output import check_output

    check_output(path, kind=kind, overwrite=overwrite)
    with atomic_dir(path) as tmp:
        files: dict[str, str] = {}
        for name, content in payload.items():
            if not _safe_name(name):
                raise ArtifactError(f"invalid payload file name {name!r}.")
            target = tmp / name
            if isinstance(content, bytes):
                target.write_bytes(content)
            else:
                os.replace(content, target)
            files[name] = sha256_file(target)
        manifest = Manifest(
            kind=kind,
            schema_version=schema_version,
            edgemed_version=__version__,
            files=files,
            parent=parent,
            metadata=_jsonable(metadata),
            created_utc=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        )
        (tmp / MANIFEST).write_text(json.dumps(manifest.to_json(), indent=2) + "\n")
    return manifest


def read_manifest(path: str | os.PathLike[str], *, kind: str | None = None, schema_versions: tuple[int, ...] = (1,),
                  verify: bool = True) -> Manifest:
    """Read and check an artifact's manifest.

    Args:
        kind: The expected kind; None accepts any.
        schema_versions: Schema versions this reader understands.
        verify: Check every payload file's sha256 (and that no file is missing).

    Raises:
        ArtifactError: Missing or unreadable manifest, wrong kind or schema, missing or altered file.
    """
    root = Path(path)
    return parse_manifest(root, read_manifest_bytes(root), kind=kind, schema_versions=schema_versions, verify=verify)


def read_manifest_bytes(path: str | os.PathLike[str]) -> bytes:
    """The exact bytes of an artifact's manifest.json, read once (what a signature is checked over).

    Raises:
        ArtifactError: Not a directory, or no readable manifest.
    """
    root = Path(path)
    if not root.is_dir():
        raise ArtifactError(f"{root} is not an artifact directory (it does not exist or is a file).")
    try:
        return (root / MANIFEST).read_bytes()
    except FileNotFoundError as err:
        raise ArtifactError(f"{root} has no {MANIFEST}; it is not an edgemed artifact or was not written completely.") from err
    except OSError as err:
        raise ArtifactError(f"{root / MANIFEST} cannot be read ({err.strerror or err}).") from err


def parse_manifest(path: str | os.PathLike[str], data: bytes, *, kind: str | None = None,
                   schema_versions: tuple[int, ...] = (1,), verify: bool = True) -> Manifest:
    """Check and parse manifest bytes already read (by `read_manifest_bytes`), so what is checked,
    what a signature covers and what is used are one and the same copy.

    Args:
        path: The artifact directory the bytes came from (payload files are hashed there).
        kind, schema_versions, verify: As for `read_manifest`.

    Raises:
        ArtifactError: Not a valid manifest, wrong kind or schema, a missing or altered payload file.
    """
    root = Path(path)
    mpath = root / MANIFEST
    try:
        raw = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
        raise ArtifactError(f"{mpath} is not valid JSON ({err}); the artifact is damaged — re-create it.") from err
    if not isinstance(raw, dict):
        raise ArtifactError(f"{mpath} is not a JSON object; the artifact is damaged — re-create it.")
    # Written by every edgemed since the field was added; older manifests lack it and are read as before.
    if CONTENT_SHA256 in raw and raw[CONTENT_SHA256] != _content_sha256(raw):
        raise ArtifactError(f"{mpath} was altered or damaged (its content no longer matches its content_sha256). "
                            "Refusing a modified manifest; re-create the artifact or restore the original.")
    try:
        manifest = Manifest(
            kind=str(raw["kind"]),
            schema_version=int(raw["schema_version"]),
            edgemed_version=str(raw["edgemed_version"]),
            files=dict(raw["files"]),
            parent=raw.get("parent"),
            metadata=dict(raw.get("metadata", {})),
            created_utc=str(raw.get("created_utc", "")),
        )
    except (KeyError, TypeError, ValueError, OverflowError) as err:
        raise ArtifactError(f"{mpath} lacks a required field ({err}); the artifact is damaged — re-create it.") from err
    for name, digest in manifest.files.items():
        # A listed name outside the directory would make verification read (and trust) any file.
        if not _safe_name(name) or not (isinstance(digest, str) and len(digest) == 64):
            raise ArtifactError(f"{mpath} lists an invalid payload entry {name!r}: {digest!r}; names are plain file "
                                "names inside the artifact with a 64-digit sha256. The manifest is damaged or forged.")
    if manifest.parent is not None and not isinstance(manifest.parent, str):
        raise ArtifactError(f"{mpath}: 'parent' must be a digest string; the artifact is damaged — re-create it.")
    if kind is not None and manifest.kind != kind:
        raise ArtifactError(f"{root} is a {manifest.kind!r} artifact, but a {kind!r} artifact is needed here.")
    if manifest.schema_version not in schema_versions:
        raise ArtifactError(
            f"{root} has {manifest.kind} schema version {manifest.schema_version}; this edgemed reads "
            f"{', '.join(map(str, schema_versions))}. Upgrade edgemed or re-create the artifact."
        )
    if verify:
        for name, expected in manifest.files.items():
            file = root / name
            if not file.is_file():
                raise ArtifactError(f"{root}: payload file {name!r} is missing; the artifact is incomplete — re-create it.")
            _check_digest(root, name, sha256_file(file), expected)
    return manifest


def read_payload(path: str | os.PathLike[str], manifest: Manifest, name: str) -> bytes:
    """A payload file's bytes, read once and checked against the manifest's sha256.

    Use these bytes (not the path) for whatever is deserialized, so a file swapped after the
    check is never what runs.

    Raises:
        ArtifactError: The file is not listed, missing, unreadable or altered.
    """
    root = Path(path)
    expected = manifest.files.get(name)
    if expected is None:
        raise ArtifactError(f"{root}: {name!r} is not among the manifest's hashed files; the artifact is damaged.")
    try:
        data = (root / name).read_bytes()
    except OSError as err:
        raise ArtifactError(f"{root}: payload file {name!r} cannot be read ({err.strerror or err}); "
                            "the artifact is incomplete — re-create it.") from err
    _check_digest(root, name, hashlib.sha256(data).hexdigest(), expected)
    return data


def _check_digest(root: Path, name: str, actual: str, expected: str) -> None:
    if actual != expected:
        raise ArtifactError(
            f"{root}: {name!r} was altered (sha256 {actual[:12]}… ≠ recorded {expected[:12]}…). "
            "Refusing to use a modified artifact; re-create it or restore the original file."
        )


def _safe_name(name: object) -> bool:
    """A plain file name inside an artifact directory (not the manifest, its signature or a path)."""
    return (isinstance(name, str) and name not in ("", ".", "..", MANIFEST, SIGNATURE)
            and not any(c in name for c in "/\\\0") and name == name.strip())


def host_facts() -> dict[str, str]:
    """Non-identifying facts about the machine that wrote an artifact."""
    return {"python": platform.python_version(), "machine": platform.machine(), "system": platform.system()}


def _jsonable(value: Any) -> Any:
    """Round-trip through JSON so tuples become lists and nothing unserialisable slips in."""
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as err:
        raise ArtifactError(f"artifact metadata is not JSON-serialisable: {err}") from err
