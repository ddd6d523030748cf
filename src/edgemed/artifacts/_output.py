"""The one rule for where edgemed may write, checked before any heavy work.

A missing output is created. An existing artifact of the same kind is replaced only with
`overwrite=True` (`--overwrite`). Anything else that exists there (a folder that is not an edgemed
artifact, a file where a folder goes, an artifact of another kind, the working directory or a
folder holding the inputs) is refused with an `OutputError` naming it; nothing is deleted.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Collection, Iterable
from pathlib import Path

from edgemed._atomic import output_error
from edgemed.artifacts._manifest import MANIFEST
from edgemed.errors import OutputError

__all__ = ["check_output", "check_output_file", "output_kind"]


def output_kind(path: str | os.PathLike[str], *, layout: Collection[str] = ()) -> str | None:
    """The kind of edgemed output at `path`: its manifest's kind, "layout" for a folder holding only
    names from `layout` (at least one), "empty" for an empty folder, else None (not edgemed's)."""
    root = Path(path)
    try:
        names = {p.name for p in root.iterdir()}
    except OSError:
        return None
    if not names:
        return "empty"
    if MANIFEST in names:
        try:
            kind = json.loads((root / MANIFEST).read_text()).get("kind")
        except (OSError, UnicodeDecodeError, ValueError, AttributeError):
            return None
        return kind if isinstance(kind, str) else None
    visible = {n for n in names if not n.startswith(".")}
    if layout and visible and visible <= set(layout):
        return "layout"
    return None


def check_output(path: str | os.PathLike[str], *, kind: str, overwrite: bool = False,
                 inputs: Iterable[str | os.PathLike[str] | None] = (), layout: Collection[str] = ()) -> Path:
    """Check that the folder output `path` may be written: before any heavy work, so a bad --out fails in seconds.

    Args:
        kind: The artifact kind about to be written ("student", "bundle", ...); only an artifact of
            this kind (or an empty folder) may be replaced.
        overwrite: Replace an existing artifact of `kind`; without it that is refused too.
        inputs: The command's inputs: an output that is one of them or a folder above one is refused.
        layout: For outputs without a manifest (a profile's report folder): the names such a folder
            holds; a folder holding only these counts as the same kind.

    Returns:
        `path` as a Path.

    Raises:
        OutputError: `path` exists and may not be replaced, or its folder cannot be written (the
            message names the path, the cause and what to do).
    """
    target = Path(path)
    try:
        _check_dir(target, kind, overwrite, inputs, layout)
    except OSError as err:  # stat of a too-long name, a folder we may not list...
        raise output_error(err, target) from err
    return target


def _check_dir(target: Path, kind: str, overwrite: bool, inputs: Iterable[str | os.PathLike[str] | None],
               layout: Collection[str]) -> None:
    _refuse_enclosing(target, inputs)
    if target.is_symlink() or (target.exists() and not target.is_dir()):
        what = "a symbolic link" if target.is_symlink() else "a file"
        raise OutputError(f"{target}: is {what}, but a {kind} artifact is a folder — choose another --out "
                          "(nothing was changed).", path=target)
    if target.is_dir():
        found = output_kind(target, layout=layout)
        same = found in ("empty", kind) or (found == "layout" and layout)
        if found is None:
            raise OutputError(f"{target}: exists and is not an edgemed artifact — choose another --out, or move "
                              "its contents away first (nothing was changed).", path=target)
        if not same:
            raise OutputError(f"{target}: holds a {found} artifact, not a {kind} — choose another --out "
                              "(nothing was changed).", path=target)
        if found != "empty" and not overwrite:
            raise OutputError(f"{target}: already holds a {kind} artifact — pass --overwrite to replace it, or "
                              "choose another --out.", path=target)
    _probe_parent(target)
    return target


def check_output_file(path: str | os.PathLike[str], *, overwrite: bool = False,
                      inputs: Iterable[str | os.PathLike[str] | None] = ()) -> Path:
    """Check that the single-file output `path` (a mask, a DICOM-SEG, a report) may be written.

    A missing file is created; an existing regular file is replaced only with `overwrite`; a
    folder, link or special file there is refused, as is an input or the folder above one.

    Raises:
        OutputError: As `check_output`.
    """
    target = Path(path)
    try:
        _check_file(target, overwrite, inputs)
    except OSError as err:
        raise output_error(err, target) from err
    return target


def _check_file(target: Path, overwrite: bool, inputs: Iterable[str | os.PathLike[str] | None]) -> None:
    _refuse_enclosing(target, inputs)
    if target.is_dir():
        raise OutputError(f"{target}: is a folder where a file goes — give a file path, e.g. "
                          f"{target / 'mask.nii.gz'} (nothing was changed).", path=target)
    if target.is_symlink() or (target.exists() and not target.is_file()):
        raise OutputError(f"{target}: is a link or special file, not a regular file — choose another --out "
                          "(nothing was changed).", path=target)
    if target.is_file() and not overwrite:
        raise OutputError(f"{target}: already exists — pass --overwrite to replace it, or choose another --out.",
                          path=target)
    _probe_parent(target)


def _refuse_enclosing(target: Path, inputs: Iterable[str | os.PathLike[str] | None]) -> None:
    """Refuse the working directory, a folder above it, an input, or a folder holding an input."""
    resolved = target.resolve()
    cwd = Path.cwd().resolve()
    if resolved == cwd or resolved in cwd.parents:
        raise OutputError(f"{target}: is the working directory (or a folder above it); writing there would replace "
                          "it — give a new folder, e.g. --out out/model.", path=target)
    for item in inputs:
        if not isinstance(item, (str, os.PathLike)):  # None, or an in-memory volume
            continue
        source = Path(item).resolve()
        if resolved == source or resolved in source.parents:
            raise OutputError(f"{target}: is an input of this command ({item}) or holds one; writing there would "
                              "destroy it — choose another --out.", path=target)


def _probe_parent(target: Path) -> None:
    """Create the output's folder and a temporary entry named as the writer's will be: a read-only
    disk, a missing permission or a too-long name fails now, not after hours of work."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{target.name}.{os.getpid()}.", suffix=".tmp", dir=target.parent)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise output_error(err, target) from err
