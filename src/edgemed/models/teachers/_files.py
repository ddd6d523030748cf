"""File helpers for teachers: existence checks with useful errors, and weight hashes for identity()."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

from edgemed.artifacts import combined_sha256, sha256_file
from edgemed.errors import InputError

__all__ = ["combined_sha256", "existing_file", "is_torchscript", "sha256_file"]


def existing_file(path: str | os.PathLike[str], what: str) -> Path:
    """`path` as a Path, or InputError when it is not a file."""
    p = Path(path)
    if not p.is_file():
        where = "is a directory" if p.is_dir() else "does not exist"
        raise InputError(f"{what} {p} {where}; check the path (relative paths start at {Path.cwd().name}/).")
    return p


def is_torchscript(path: Path) -> bool:
    """True when `path` is a TorchScript archive (torch.jit.save), not a pickled state dict.

    Both are zip files; only TorchScript archives carry compiled code (``code/``) and
    ``constants.pkl``.
    """
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in archive.namelist())
