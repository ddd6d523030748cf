"""Stored teacher predictions: label maps or probability maps saved next to the scans.

The way to distill from a teacher too heavy to run in the loop: run it once, store its outputs,
and let `StoredPredictions` stand in for it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import nibabel as nib
import numpy as np
from nibabel.filebasedimages import ImageFileError

from edgemed.errors import ConfigError, InputError
from edgemed.io import read_labels
from edgemed.models.teachers._files import combined_sha256, existing_file
from edgemed.models.teachers._output import TeacherOutput

if TYPE_CHECKING:
    from edgemed.io import Volume

__all__ = ["StoredPredictions", "load_stored_prediction"]

_NIFTI = (".nii", ".nii.gz")


def load_stored_prediction(
    path: str | os.PathLike[str], like: Volume, *, class_ids: Sequence[int] | None = None
) -> TeacherOutput:
    """A teacher's stored output for the scan `like`, checked to lie on its grid.

    Accepted files:
        - a label map that `edgemed.io.read_labels` reads (NIfTI, NRRD, DICOM-SEG; kind="labels";
          class_ids default to the ids present, 0 included);
        - a 4D NIfTI probability map, classes on the last axis (kind="probs"); class_ids from a
          sidecar ``<name>.json`` holding ``{"class_ids": [...]}``, else 0..C-1;
        - an ``.npz`` with ``probabilities`` or ``logits`` (C, X, Y, Z) in canonical RAS voxel order,
          plus ``class_ids`` (else 0..C-1) and optionally ``affine`` (checked against `like`).

    Args:
        path: The stored prediction.
        like: The scan it belongs to.
        class_ids: Overrides the ids found in or beside the file.

    Raises:
        InputError: Missing, unreadable or unsupported file, or not on `like`'s grid.
        ConfigError: class_ids that do not match the channels.

    Example:
        >>> ct = read_volume("case1/ct.nii.gz")                                     # doctest: +SKIP
        >>> out = load_stored_prediction("case1/totalseg.nii.gz", like=ct)         # doctest: +SKIP
        >>> out.mask([5]).sum()  # liver voxels                                     # doctest: +SKIP
    """
    p = existing_file(path, "stored prediction")
    name = p.name.lower()
    if name.endswith(".npz"):
        return _from_npz(p, like, class_ids)
    if name.endswith(_NIFTI) and _nifti_ndim(p) == 4:
        return _from_nifti_probabilities(p, like, class_ids)
    return _from_labels(p, like, class_ids)


class StoredPredictions:
    """A teacher that looks its answers up: scan → stored prediction file.

    `predict(volume)` finds the file by ``volume.source`` (the scan's file name or path, as
    `edgemed.io.read_volume` records it).

    Example:
        >>> teacher = StoredPredictions([("ct/case1.nii.gz", "pred/case1.nii.gz")])  # doctest: +SKIP
        >>> teacher.predict(read_volume("ct/case1.nii.gz")).mask([5])               # doctest: +SKIP
    """

    def __init__(
        self,
        pairs: Iterable[tuple[str | os.PathLike[str], str | os.PathLike[str]]],
        *,
        class_ids: Sequence[int] | None = None,
    ) -> None:
        """Args:
            pairs: (scan path, prediction path) pairs.
            class_ids: Passed to `load_stored_prediction` for every file.

        Raises:
            InputError: A prediction file is missing.
            ConfigError: No pairs, or two scans with the same file name.
        """
        self._by_scan: dict[str, Path] = {}
        for scan, prediction in pairs:
            key = Path(scan).name
            if key in self._by_scan:
                raise ConfigError(f"two scans are named {key!r}; stored predictions are matched by scan file name.")
            self._by_scan[key] = existing_file(prediction, "stored prediction")
        if not self._by_scan:
            raise ConfigError("StoredPredictions got no (scan, prediction) pairs.")
        self.class_ids = None if class_ids is None else tuple(int(i) for i in class_ids)
        self._sha256: str | None = None

    def identity(self) -> dict[str, object]:
        """{"kind": "stored", "name": the predictions' folder name, "sha256": over all prediction files}."""
        files = list(self._by_scan.values())
        root = Path(os.path.commonpath([f.resolve().parent for f in files]))
        if self._sha256 is None:
            self._sha256 = combined_sha256([f.resolve() for f in files], root)
        return {"kind": "stored", "name": root.name, "sha256": self._sha256, "count": len(files)}

    def predict(self, volume: Volume) -> TeacherOutput:
        """The stored prediction for `volume` (matched by its source's file name)."""
        key = Path(volume.source).name if volume.source else ""
        if key not in self._by_scan:
            known = ", ".join(sorted(self._by_scan)[:3])
            raise InputError(
                f"no stored prediction for scan {key or '(unnamed volume)'!r}; predictions exist for {known}"
                f"{' …' if len(self._by_scan) > 3 else ''}. Add the pair or run the teacher on it."
            )
        return load_stored_prediction(self._by_scan[key], volume, class_ids=self.class_ids)


def _from_labels(path: Path, like: Volume, class_ids: Sequence[int] | None) -> TeacherOutput:
    # io checks integrality, sign and format, and raises InputError when the grids differ.
    labels = read_labels(path, like=like).array
    ids = tuple(int(i) for i in class_ids) if class_ids is not None else tuple(int(i) for i in np.unique(labels))
    dtype = np.uint8 if int(labels.max(initial=0)) < 256 else np.int16
    return TeacherOutput(class_ids=ids or (0,), kind="labels", labels=labels.astype(dtype, copy=False))


def _nifti_ndim(path: Path) -> int:
    try:
        return len(nib.load(os.fspath(path)).shape)
    except (ImageFileError, OSError, ValueError) as err:
        raise InputError(f"{path.name}: cannot read it as NIfTI ({err}); the file is corrupt or truncated.") from err


def _from_nifti_probabilities(path: Path, like: Volume, class_ids: Sequence[int] | None) -> TeacherOutput:
    image = nib.as_closest_canonical(nib.load(os.fspath(path)))  # same RAS voxel order as every Volume
    shape, affine = tuple(int(s) for s in image.shape[:3]), np.asarray(image.affine, dtype=np.float64)
    _check_grid(path, shape, affine, like)
    scores = np.moveaxis(np.asarray(image.dataobj, dtype=np.float32), -1, 0)
    ids = class_ids if class_ids is not None else _sidecar_class_ids(path)
    ids = tuple(ids) if ids is not None else tuple(range(scores.shape[0]))
    return TeacherOutput(class_ids=ids, kind="probs", scores=scores)


def _from_npz(path: Path, like: Volume, class_ids: Sequence[int] | None) -> TeacherOutput:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as err:
        raise InputError(f"{path.name}: cannot read it as .npz ({err}); write it with np.savez_compressed.") from err
    kinds = [k for k in ("probabilities", "logits") if k in arrays]
    if len(kinds) != 1:
        raise InputError(
            f"{path.name}: needs exactly one of 'probabilities' or 'logits' (C, X, Y, Z); it has {sorted(arrays)}."
        )
    scores = arrays[kinds[0]]
    if scores.ndim != 4:
        raise InputError(f"{path.name}: {kinds[0]} has shape {scores.shape}; store (C, X, Y, Z).")
    affine = arrays.get("affine")
    _check_grid(path, tuple(int(s) for s in scores.shape[1:]), affine, like)
    if class_ids is None and "class_ids" in arrays:
        class_ids = [int(i) for i in np.asarray(arrays["class_ids"]).ravel()]
    ids = tuple(class_ids) if class_ids is not None else tuple(range(scores.shape[0]))
    kind = "probs" if kinds[0] == "probabilities" else "logits"
    return TeacherOutput(class_ids=ids, kind=kind, scores=scores.astype(np.float32, copy=False))


def _check_grid(path: Path, shape: tuple[int, ...], affine: np.ndarray | None, like: Volume) -> None:
    same_shape = shape == like.shape
    same_affine = affine is None or np.allclose(affine, like.affine, atol=1e-3)
    if not (same_shape and same_affine):
        raise InputError(
            f"{path.name} is not on the grid of {like.source or 'the scan'}: shape {shape} vs {like.shape}"
            f"{'' if same_affine else ', and the voxel-to-world matrices differ'}. Store predictions on the scan's "
            "own grid (resample them with edgemed.io.resample_like first)."
        )


def _sidecar_class_ids(path: Path) -> list[int] | None:
    stem = path.name[: -len(".nii.gz")] if path.name.endswith(".nii.gz") else path.stem
    sidecar = path.with_name(stem + ".json")
    if not sidecar.is_file():
        return None
    try:
        meta = json.loads(sidecar.read_text())
        return [int(i) for i in meta["class_ids"]]
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"{sidecar.name}: expected {{\"class_ids\": [0, 5, ...]}} ({err}).") from err
