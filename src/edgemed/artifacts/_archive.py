"""One-file artifacts for shipping: pack a directory into a tar, extract it safely on the device.

Extraction trusts nothing in the archive: every member must be a regular file directly inside one
top-level folder, with a plain name (no absolute path, no "..", no link, device or FIFO); member
count and total size are capped (counted while copying, not taken from the headers); the result is
written atomically and its manifest verified (and its signature, when keys are given) before it
replaces anything. Stdlib only (tarfile), so device software unpacks without torch.
"""

from __future__ import annotations

import os
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgemed._atomic import OUTPUT_ERRNOS, atomic_dir, atomic_file, output_error
from edgemed.artifacts._manifest import MANIFEST, SIGNATURE, read_manifest
from edgemed.artifacts._output import check_output, check_output_file, output_kind
from edgemed.errors import ArtifactError, ConfigError, OutputError

__all__ = ["MAX_ARCHIVE_BYTES", "MAX_ARCHIVE_MEMBERS", "extract_artifact", "pack_artifact"]

MAX_ARCHIVE_BYTES = 4 << 30   # 4 GiB of extracted files: far above any edge model
MAX_ARCHIVE_MEMBERS = 64
_CHUNK = 1 << 20


def pack_artifact(path: str | os.PathLike[str], out: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
    """Pack an artifact directory (verified first) into `out` (.tar, or .tar.gz / .tgz compressed).

    Args:
        overwrite: Replace an existing file at `out`.

    Raises:
        ArtifactError: The artifact is damaged.
        OutputError: `out` exists (without `overwrite`), is a folder, or cannot be written.
    """
    root, out = Path(path), Path(out)
    check_output_file(out, overwrite=overwrite, inputs=[root])
    manifest = read_manifest(root)
    names = [MANIFEST, *sorted(manifest.files)] + ([SIGNATURE] if (root / SIGNATURE).is_file() else [])
    mode = "w:gz" if out.name.endswith((".tar.gz", ".tgz")) else "w"
    with atomic_file(out) as tmp, tarfile.open(tmp, mode) as tar:
        for name in names:
            info = tar.gettarinfo(str(root / name), arcname=f"{root.name}/{name}")
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o644
            with open(root / name, "rb") as fh:
                tar.addfile(info, fh)
    return out


def extract_artifact(archive: str | os.PathLike[str], dest: str | os.PathLike[str], *,
                     max_bytes: int = MAX_ARCHIVE_BYTES, max_members: int = MAX_ARCHIVE_MEMBERS,
                     trusted_keys: Sequence[str | os.PathLike[str]] | None = None, overwrite: bool = False) -> Path:
    """Extract a packed artifact into directory `dest` safely, verify it, then put it in place.

    Args:
        overwrite: Replace an artifact of the same kind at `dest`; anything else there is refused.
        max_bytes: Refuse archives whose files add up to more (counted while extracting).
        max_members: Refuse archives with more entries.
        trusted_keys: Also require a valid signature by one of these keys (see `verify_artifact`).

    Returns:
        `dest`, holding the verified artifact.

    Raises:
        ArtifactError: Not a readable tar, an unsafe or unexpected member, over the limits, or the
            extracted artifact fails verification (nothing is left at `dest` then).
        OutputError: `dest` holds something that may not be replaced, or the disk refused the write
            (full, read-only...): the disk is blamed then, not the archive.
    """
    from edgemed.artifacts._signing import verify_artifact

    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise ConfigError(f"{archive} does not exist or is not a file.")
    existing = output_kind(dest) if dest.is_dir() else None
    # Until the archive is read its kind is unknown: an artifact at `dest` is checked against its own
    # kind now (so it needs overwrite) and against the archive's once extracted.
    check_output(dest, kind=existing if existing not in (None, "empty", "layout") else "packed", overwrite=overwrite,
                 inputs=[archive])
    try:
        tar = tarfile.open(archive, "r:*")
    except (tarfile.TarError, OSError, EOFError) as err:
        raise ArtifactError(f"{archive.name} is not a readable tar archive ({err}); pack it with edgemed pack.") from err
    with tar, atomic_dir(dest) as tmp:
        total, seen, top = 0, set(), None
        try:
            for count, member in enumerate(tar, start=1):
                if count > max_members:
                    raise ArtifactError(f"{archive.name} holds more than {max_members} entries; an artifact has a "
                                        "handful. Refusing it.")
                name = _member_name(archive, member)
                folder, _, file = name.partition("/")
                if top is None:
                    top = folder
                if folder != top or file in seen:
                    raise ArtifactError(f"{archive.name}: entry {member.name!r} is outside the artifact's folder "
                                        f"{top!r} or repeated; refusing it.")
                seen.add(file)
                total = _copy_member(tar, member, tmp / file, archive, total, max_bytes)
        except (tarfile.TarError, OSError, EOFError) as err:
            if isinstance(err, OSError) and _is_disk_error(err, tmp):  # a full disk is not a damaged archive
                raise output_error(err, dest) from err
            raise ArtifactError(f"{archive.name} is damaged ({type(err).__name__}: {err}); copy it again.") from err
        if MANIFEST not in seen:
            raise ArtifactError(f"{archive.name} holds no {MANIFEST}; it is not a packed edgemed artifact.")
        try:
            verify_artifact(tmp, trusted_keys=trusted_keys)
        except ArtifactError as err:  # name the archive, not the temporary folder it was checked in
            raise ArtifactError(f"{archive.name} (unpacked): {str(err).replace(str(tmp), str(top))}") from err
        kind = output_kind(tmp)
        if existing not in (None, "empty", "layout") and kind != existing:
            raise OutputError(f"{dest}: holds a {existing} artifact and the archive a {kind} — choose another --out "
                              "(nothing was changed).", path=dest)
    return dest


def _is_disk_error(err: OSError, tmp: Path) -> bool:
    """An error of writing the extracted files (full or read-only disk...), not of reading the archive."""
    return err.errno in OUTPUT_ERRNOS or str(err.filename or "").startswith(str(tmp))


def _member_name(archive: Path, member: Any) -> str:
    name = str(member.name)
    if member.isdir() and name.count("/") == 0:
        raise ArtifactError(f"{archive.name}: directory entries are not expected ({name!r}); pack with edgemed pack.")
    if not member.isfile():
        kind = "link" if (member.issym() or member.islnk()) else "special file"
        raise ArtifactError(f"{archive.name}: entry {name!r} is a {kind}; artifacts hold regular files only. "
                            "Refusing it (links can point outside the destination).")
    parts = name.split("/")
    if (name.startswith(("/", "\\")) or len(parts) != 2 or any(p in ("", ".", "..") for p in parts)
            or any(c in name for c in "\\\0:") or os.path.isabs(name)):
        raise ArtifactError(f"{archive.name}: entry {name!r} is not a plain FOLDER/FILE path (absolute, '..', or "
                            "nested); refusing it, as it could write outside the destination.")
    return name


def _copy_member(tar: tarfile.TarFile, member: Any, target: Path, archive: Path, total: int, max_bytes: int) -> int:
    source = tar.extractfile(member)
    if source is None:
        raise ArtifactError(f"{archive.name}: entry {member.name!r} cannot be read.")
    with source, open(target, "xb") as fh:
        while chunk := source.read(_CHUNK):
            total += len(chunk)
            if total > max_bytes:
                raise ArtifactError(f"{archive.name} extracts to more than {max_bytes / 2**20:.0f} MiB; refusing it "
                                    "(raise max_bytes only for an archive you trust).")
            fh.write(chunk)
    return total
