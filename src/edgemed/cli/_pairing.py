"""Pair scans with teacher predictions: in order, or folders by file name."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from edgemed.errors import ConfigError, InputError

__all__ = ["expand_inputs", "pair_scans"]

_SUFFIXES = (".nii.gz", ".nii", ".npz", ".dcm", ".nrrd")


def _stem(path: Path) -> str:
    name = path.name
    for suffix in _SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _is_collection(folder: Path) -> bool:
    """A folder of scans (NIfTI files, or DICOM series subfolders) rather than one DICOM series."""
    entries = [p for p in folder.iterdir() if not p.name.startswith(".")]
    return any(p.name.endswith((".nii", ".nii.gz", ".npz")) for p in entries) or (
        bool(entries) and all(p.is_dir() for p in entries))


def expand_inputs(paths: Sequence[str]) -> list[Path]:
    """Files stay; a folder of scans becomes its sorted entries; a DICOM series folder stays one scan."""
    out: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise InputError(f"{path} does not exist; check the path.")
        if path.is_dir() and _is_collection(path):
            out.extend(sorted(p for p in path.iterdir() if not p.name.startswith(".")
                              and (p.is_dir() or p.name.endswith((".nii", ".nii.gz", ".npz")))))
        else:
            out.append(path)
    return out


def pair_scans(scans: Sequence[str], predictions: Sequence[str] | None) -> tuple[list[Path], list[Path] | None]:
    """The scan list and, when given, the prediction list paired one to one.

    Folders on both sides pair by file name (without extension); explicit files pair in order.

    Raises:
        ConfigError: Counts differ, or a scan has no prediction of the same name.
    """
    scan_paths = expand_inputs(scans)
    if not scan_paths:
        raise InputError(f"no scans found in {', '.join(scans)}.")
    if predictions is None:
        return scan_paths, None
    pred_paths = expand_inputs(predictions)
    both_folders = all(Path(p).is_dir() for p in scans) and all(Path(p).is_dir() for p in predictions) and (
        len(scan_paths) > 1 or len(pred_paths) > 1)
    if both_folders:
        by_name = {_stem(p): p for p in pred_paths}
        missing = [p.name for p in scan_paths if _stem(p) not in by_name]
        if missing:
            raise ConfigError(
                f"no teacher prediction named like scan(s) {', '.join(missing[:5])}; folders pair by file name "
                "(ct_001.nii.gz ↔ ct_001.nii.gz). Rename, or list files explicitly in matching order."
            )
        return scan_paths, [by_name[_stem(p)] for p in scan_paths]
    if len(scan_paths) != len(pred_paths):
        raise ConfigError(
            f"{len(scan_paths)} scan(s) but {len(pred_paths)} teacher prediction(s); they pair in order, one each."
        )
    return scan_paths, pred_paths
