"""File helpers for teachers: existence checks with useful errors, and weight hashes for identity()."""

from __future__ import annotations

import hashlib
import os
import zipfile
from collections.abc import Iterable
from pathlib import Path

from edgemed.errors import InputError

__all__ = ["combined_sha256", "existing_file", "is_torchscript", "sha256_file"]


def existing_file(path: str | os.PathLike[str], what: str) -> Path:
    """`path` as a Path, or InputError when it is not a file."""
    p = Path(path)
    if not p.is_file():
        where = "is a directory" if p.is_dir() else "does not exist"
        raise InputError(f"{what} {p} {where}; check the path (relative paths start at {Path.cwd().name}/).")
    return p


def sha256_file(path: Path) -> str:
    """Hex sha256 of one file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
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


def is_torchscript(path: Path) -> bool:
    """True when `path` is a TorchScript archive (torch.jit.save), not a pickled state dict.

    Both are zip files; only TorchScript archives carry compiled code (``code/``) and
    ``constants.pkl``.
    """
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in archive.namelist())
