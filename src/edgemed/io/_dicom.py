"""DICOM image series: find the files, check the geometry, stack the slices into a RAS volume."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from edgemed.errors import EdgemedWarning, InputError
from edgemed.io._deid import identifiers, redact, redact_library_logs
from edgemed.io._orient import LPS_TO_RAS, to_canonical
from edgemed.io._volume import Volume

__all__ = ["SEG_SOP_CLASS", "DicomFile", "read_dicom_series", "read_header", "scan_folder"]

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
_DICOMDIR_SOP_CLASS = "1.2.840.10008.1.3.10"
# What pydicom raises on a cut or garbled file (after the DICM preamble was found).
_PARSE_ERRORS = (OSError, EOFError, ValueError, KeyError)
# What pydicom's pixel handlers raise for an unsupported or broken compressed stream.
_DECODE_ERRORS = (RuntimeError, NotImplementedError, ValueError, AttributeError)
# Slice gaps may differ from the median by this much (DS values are rounded by some scanners).
_GAP_TOLERANCE_MM = 0.1
_GAP_TOLERANCE_FRACTION = 0.1

DicomFile = tuple[Path, Dataset]
redact_library_logs()  # pydicom logs the header values it cannot convert


def read_header(path: Path) -> Dataset | None:
    """Parse a DICOM file, deferring the pixel data; None when the file is not DICOM at all.

    Raises:
        InputError: If the file starts like DICOM but cannot be parsed.
    """
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            header = pydicom.dcmread(os.fspath(path), defer_size="256 KB")
    except InvalidDicomError:
        return None
    except _PARSE_ERRORS as err:
        # No chain: pydicom's message may quote the header bytes it choked on (a name, a date).
        raise InputError(
            f"{redact(path.name)}: looks like DICOM but could not be parsed "
            f"({type(err).__name__}: {redact(str(err))}); the file is truncated or corrupt. Copy it again, "
            "or remove it from the folder."
        ) from None
    # pydicom's warnings quote header values (an invalid date is a date): pass them on redacted.
    known = identifiers([header]) if caught else []
    for w in caught:
        warnings.warn(f"{redact(path.name, known)}: {redact(str(w.message), known)}", EdgemedWarning, stacklevel=2)
    return header


def scan_folder(folder: Path) -> list[DicomFile]:
    """The DICOM files directly inside `folder` (not recursive); other files are ignored.

    Raises:
        InputError: If the folder holds no DICOM file (the message names any sub-folders).
    """
    found: list[DicomFile] = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        header = read_header(path)
        if header is not None and header.get("SOPClassUID", "") != _DICOMDIR_SOP_CLASS:
            found.append((path, header))
    if not found:
        subdirs = sorted(p.name for p in folder.iterdir() if p.is_dir())
        hint = (
            f" It has sub-folders ({', '.join(subdirs[:5])}{', ...' if len(subdirs) > 5 else ''}): "
            "pass the one that holds the slices of a single series."
            if subdirs
            else " Pass a folder holding the .dcm slices of one series, or a .nii.gz file."
        )
        raise InputError(f"{redact(folder.name)}: no DICOM files found in this folder.{hint}")
    return found


def read_dicom_series(files: Sequence[DicomFile], *, source: str) -> Volume:
    """Stack the slices of one DICOM image series into a canonical RAS float32 volume.

    Slices are ordered by their position along the slice normal (not by file name or
    InstanceNumber), RescaleSlope/Intercept are applied per slice (CT → HU) and voxels equal to
    PixelPaddingValue are set to the lowest real value of the series (air, e.g. -1024 HU).

    Args:
        files: (path, header) pairs of one or more DICOM files.
        source: The name used in messages and in `Volume.source`.

    Raises:
        InputError: If the files belong to several series, have no pixel data, are multi-frame, or
            their geometry is inconsistent (missing slices, uneven spacing, mixed orientations).

    `source` and the file names in messages are redacted first: any patient name, ID, date or UID
    of the headers (or any UID- or date-like text) in them is replaced by a placeholder.
    """
    known = identifiers(ds for _, ds in files)
    source = redact(source, known)
    _require_one_series(files, source, known)
    for path, ds in files:
        _check_image_file(path, ds, known)
    geometry = _SliceGeometry.from_files(files, source)
    order = np.argsort(geometry.positions_mm, kind="stable")
    files = [files[i] for i in order]
    positions = geometry.positions_mm[order]
    _check_spacing(positions, [redact(p.name, known) for p, _ in files], source)

    stored = np.empty((len(files), geometry.rows, geometry.columns), dtype=np.float32)
    padding = np.zeros(stored.shape, dtype=bool)
    for k, (path, ds) in enumerate(files):
        raw = _pixels(path, ds, geometry, known)
        slope = float(ds.get("RescaleSlope", 1.0) or 1.0)
        intercept = float(ds.get("RescaleIntercept", 0.0) or 0.0)
        stored[k] = raw.astype(np.float32) * np.float32(slope) + np.float32(intercept)
        padding[k] = _padding_mask(raw, ds)
    if padding.any() and not padding.all():
        # Padding marks "outside the scanned field of view": the lowest real value (air) keeps the
        # body's edge realistic instead of a -3024 HU cliff that would dominate any windowing.
        stored[padding] = stored[~padding].min()

    affine_lps = np.eye(4)
    affine_lps[:3, 0] = geometry.row_cosine * geometry.column_spacing_mm
    affine_lps[:3, 1] = geometry.column_cosine * geometry.row_spacing_mm
    first, last = files[0][1], files[-1][1]
    if len(files) > 1:
        # The true step between slice origins (a gantry tilt shows up as shear, kept in the affine).
        affine_lps[:3, 2] = (_position(last) - _position(first)) / (len(files) - 1)
    else:
        affine_lps[:3, 2] = geometry.normal * _single_slice_thickness_mm(first)
    affine_lps[:3, 3] = _position(first)
    # DICOM stores slices as (row, column) = (j, i); edgemed arrays are (i, j, k).
    array, affine = to_canonical(stored.transpose(2, 1, 0), LPS_TO_RAS @ affine_lps, source=source)
    return Volume(np.ascontiguousarray(array), affine, str(first.get("Modality", "OT") or "OT"), source,
                  _safe_meta(files, int(padding.sum())))


def _require_one_series(files: Sequence[DicomFile], source: str, known: list[str]) -> None:
    by_series: dict[str, list[DicomFile]] = {}
    for item in files:
        by_series.setdefault(str(item[1].get("SeriesInstanceUID", "")), []).append(item)
    if len(by_series) < 2:
        return
    lines = []
    for members in by_series.values():
        ds = members[0][1]
        # Number, modality and size only: a SeriesDescription is free text that may name the patient.
        lines.append(
            f"  series {ds.get('SeriesNumber', '?')} ({ds.get('Modality', '?')}, {len(members)} files, "
            f"e.g. {redact(members[0][0].name, known)})"
        )
    raise InputError(
        f"{source}: holds {len(by_series)} DICOM series:\n" + "\n".join(lines) + "\n"
        "Pass one series folder: move each series into its own folder (or export a single series)."
    )


def _check_image_file(path: Path, ds: Dataset, known: list[str]) -> None:
    name = redact(path.name, known)
    if ds.get("SOPClassUID", "") == SEG_SOP_CLASS:
        raise InputError(f"{name}: is a DICOM-SEG, not an image; read it with read_labels(path, like=image).")
    if "PixelData" not in ds:
        raise InputError(
            f"{name}: is DICOM without pixel data ({ds.get('Modality', 'unknown modality')}): a "
            "non-image object (report, presentation state) or a truncated file. Remove it, or pass the "
            "folder of the image series."
        )
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise InputError(
            f"{name}: is a multi-frame (enhanced) DICOM image; edgemed reads one slice per file. "
            "Convert it first, e.g. `dcm2niix -z y -o out/ folder/`, and pass the .nii.gz."
        )
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise InputError(
            f"{name}: is a colour image ({ds.get('PhotometricInterpretation')}); pass a CT or MR series."
        )


@dataclass(frozen=True)
class _SliceGeometry:
    """The in-plane grid all slices share, and each slice's position along the normal."""

    rows: int
    columns: int
    row_cosine: np.ndarray
    column_cosine: np.ndarray
    row_spacing_mm: float
    column_spacing_mm: float
    positions_mm: np.ndarray

    @property
    def normal(self) -> np.ndarray:
        """Unit vector along increasing slice position (row × column cosine)."""
        return np.cross(self.row_cosine, self.column_cosine)

    @classmethod
    def from_files(cls, files: Sequence[DicomFile], source: str) -> _SliceGeometry:
        try:
            first = files[0][1]
            cosines = np.array([[float(v) for v in ds.ImageOrientationPatient] for _, ds in files])
            spacings = np.array([[float(v) for v in ds.PixelSpacing] for _, ds in files])
            sizes = {(int(ds.Rows), int(ds.Columns)) for _, ds in files}
            origins = np.array([_position(ds) for _, ds in files])
        except (AttributeError, ValueError, TypeError) as err:
            raise InputError(
                f"{source}: a slice lacks ImagePositionPatient, ImageOrientationPatient, PixelSpacing or "
                f"Rows/Columns ({err}); it is not a cross-sectional CT/MR image. Pass the image series itself."
            ) from err
        if len(sizes) > 1 or np.ptp(cosines, axis=0).max() > 1e-3 or np.ptp(spacings, axis=0).max() > 1e-3:
            raise InputError(
                f"{source}: the slices differ in size, orientation or pixel spacing (sizes {sorted(sizes)}); "
                "the folder mixes acquisitions (e.g. a localizer). Pass a folder with one consistent series."
            )
        row_cosine, column_cosine = cosines[0, :3], cosines[0, 3:]
        positions_mm = origins @ np.cross(row_cosine, column_cosine)
        return cls(int(first.Rows), int(first.Columns), row_cosine, column_cosine,
                   float(spacings[0, 0]), float(spacings[0, 1]), positions_mm)


def _position(ds: Dataset) -> np.ndarray:
    return np.array([float(v) for v in ds.ImagePositionPatient], dtype=np.float64)


def _check_spacing(positions_mm: np.ndarray, names: list[str], source: str) -> None:
    if len(positions_mm) < 2:
        return
    gaps = np.diff(positions_mm)
    typical = float(np.median(gaps))
    duplicate = np.flatnonzero(gaps < 1e-3)
    if duplicate.size:
        k = int(duplicate[0])
        raise InputError(
            f"{source}: {names[k]} and {names[k + 1]} lie at the same position ({positions_mm[k]:.2f} mm along "
            "the slice normal); the folder holds several acquisitions or time points. Pass one of them."
        )
    tolerance = max(_GAP_TOLERANCE_MM, _GAP_TOLERANCE_FRACTION * typical)
    uneven = np.flatnonzero(np.abs(gaps - typical) > tolerance)
    if uneven.size:
        k = int(uneven[0])
        missing = round(gaps[k] / typical) - 1
        why = f"about {missing} slice(s) seem to be missing" if missing >= 1 else "the spacing is uneven"
        raise InputError(
            f"{source}: the gap between {names[k]} ({positions_mm[k]:.2f} mm) and {names[k + 1]} "
            f"({positions_mm[k + 1]:.2f} mm) is {gaps[k]:.2f} mm, but slices are {typical:.2f} mm apart "
            f"elsewhere; {why} ({uneven.size} uneven gap(s) in all). Export the complete series again."
        )


def _pixels(path: Path, ds: Dataset, geometry: _SliceGeometry, known: list[str]) -> np.ndarray:
    name = redact(path.name, known)
    try:
        raw = ds.pixel_array
    except _DECODE_ERRORS as err:
        file_meta = getattr(ds, "file_meta", None)
        syntax = file_meta.get("TransferSyntaxUID", None) if file_meta is not None else None
        raise InputError(
            f"{name}: could not decode the pixel data (transfer syntax "
            f"{getattr(syntax, 'name', syntax)}: {redact(str(err), known)}). If the file is truncated, copy it again; if its "
            "codec needs a plugin, install the decoders (pip install pylibjpeg pylibjpeg-libjpeg "
            "pylibjpeg-openjpeg) or decompress the series first (gdcmconv --raw)."
        ) from err
    if raw.shape != (geometry.rows, geometry.columns):
        raise InputError(
            f"{name}: pixel data of shape {raw.shape} does not match Rows x Columns; the file is corrupt."
        )
    return raw


def _padding_mask(raw: np.ndarray, ds: Dataset) -> np.ndarray:
    value = ds.get("PixelPaddingValue", None)
    if value is None:
        return np.zeros(raw.shape, dtype=bool)
    limit = ds.get("PixelPaddingRangeLimit", None)
    if limit is None:
        return raw == value
    low, high = min(int(value), int(limit)), max(int(value), int(limit))
    return (raw >= low) & (raw <= high)


def _single_slice_thickness_mm(ds: Dataset) -> float:
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        value = ds.get(keyword, None)
        if value is not None and float(value) > 0:
            return float(value)
    return 1.0


def _safe_meta(files: Sequence[DicomFile], padding_voxels: int) -> dict[str, object]:
    """Facts that cannot identify a patient: no names, IDs, dates or UIDs (a product requirement)."""
    ds = files[0][1]
    file_meta = getattr(ds, "file_meta", None)
    syntax = file_meta.get("TransferSyntaxUID", None) if file_meta is not None else None
    meta: dict[str, object] = {
        "format": "DICOM",
        "modality": str(ds.get("Modality", "OT") or "OT"),
        "slices": len(files),
        "transfer_syntax": getattr(syntax, "name", "unknown"),
        "padding_voxels": padding_voxels,
    }
    for key, keyword in (("manufacturer", "Manufacturer"), ("manufacturer_model", "ManufacturerModelName")):
        if ds.get(keyword):
            meta[key] = str(ds.get(keyword))
    if ds.get("KVP"):
        meta["kvp"] = float(ds.KVP)
    if ds.get("RescaleType"):
        meta["rescale_type"] = str(ds.RescaleType)
    return meta
