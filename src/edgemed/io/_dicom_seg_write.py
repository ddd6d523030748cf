"""Write a label map as DICOM-SEG referencing the DICOM series it was computed from (highdicom)."""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from edgemed._atomic import atomic_file
from edgemed.errors import InputError
from edgemed.io._deid import identifiers, redact
from edgemed.io._dicom import scan_folder
from edgemed.io._volume import Volume

__all__ = ["write_dicom_seg"]

_LPS = np.diag([-1.0, -1.0, 1.0])  # DICOM patient coordinates (LPS) ↔ RAS


def write_dicom_seg(labels: Volume, series_folder: str | os.PathLike[str], path: str | os.PathLike[str],
                    organs: Mapping[int, str], *, algorithm: str = "edgemed", note: str | None = None) -> Path:
    """Write `labels` (on the grid of the DICOM series in `series_folder`) as a binary DICOM-SEG.

    One segment per organ (label id → name), frames placed on the source images, so PACS viewers
    overlay it on the original series. The SEG carries the series' patient and study identity, as
    DICOM requires of a derived object; edgemed's own artifacts and logs never do.

    Args:
        note: A line viewers should show with the mask, e.g. the runtime QC's `QCReport.summary()`
            ("QC warn (est. Dice 0.78): ..."). It becomes the Series Description and Content
            Description (cut to 64 characters, as DICOM's LO allows), and its verdict the Content
            Label (QC_OK / QC_WARN / QC_FAIL; QC_UNCALIBRATED for "QC not calibrated").

    Raises:
        InputError: The folder is not one DICOM series, the label map is not on its grid, or a header
            value the SEG must copy is malformed (the message names no value: they identify the patient).
    """
    import pydicom
    import highdicom as hd
    from pydicom.sr.codedict import codes

    files = scan_folder(Path(series_folder))
    sources = [pydicom.dcmread(f[0]) for f in files]
    for ds in sources:
        # Older scanners write an empty SpecificCharacterSet; Latin-1 is a superset of the default repertoire it stands for.
        if not str(getattr(ds, "SpecificCharacterSet", "") or "").strip():
            ds.SpecificCharacterSet = "ISO_IR 100"
    sources.sort(key=lambda ds: float(np.dot(_normal(ds), np.asarray(ds.ImagePositionPatient, float))))
    inv = np.linalg.inv(labels.affine)
    frames = np.zeros((len(sources), int(sources[0].Rows), int(sources[0].Columns)), np.uint8)
    ids = sorted(organs)
    for f, ds in enumerate(sources):
        ijk = _voxel_indices(ds, inv)
        if (ijk < 0).any() or (ijk >= np.asarray(labels.shape)[:, None, None]).any():
            raise InputError(f"the label map is not on the grid of {redact(Path(series_folder).name, identifiers(sources))}"
                             "; segment that series.")
        values = labels.array[ijk[0], ijk[1], ijk[2]]
        for s, lid in enumerate(ids, start=1):
            frames[f][values == lid] = s
    descriptions = [
        hd.seg.SegmentDescription(  # type: ignore[attr-defined]
            segment_number=s, segment_label=organs[lid], segmented_property_category=codes.SCT.Organ,
            segmented_property_type=hd.sr.CodedConcept(value=str(lid), scheme_designator="99EDGEMED", meaning=organs[lid]),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=hd.AlgorithmIdentificationSequence(
                name=algorithm, version="1", family=codes.DCM.ArtificialIntelligence),
        )
        for s, lid in enumerate(ids, start=1)
    ]
    with warnings.catch_warnings():
        # highdicom warns with the patient's name in the message; identifiers never reach our logs.
        warnings.simplefilter("ignore", UserWarning)
        try:
            seg = _segmentation(hd, sources, frames, descriptions, algorithm, note)
        except (ValueError, TypeError, AttributeError, KeyError) as err:
            # pydicom/highdicom quote the offending header value (a birth date, a name): say what is
            # wrong with it redacted, and drop the chain, whose messages and locals hold the value.
            known = identifiers(sources)
            raise InputError(
                f"cannot write the DICOM-SEG: a header value of the series in {redact(Path(series_folder).name, known)}"
                f" that a SEG must copy is malformed ({type(err).__name__}: {redact(str(err), known)}). Correct the "
                "series' headers (e.g. with dcmodify) and segment again, or leave out the DICOM-SEG."
            ) from None
    out = Path(path)
    with atomic_file(out) as tmp:
        seg.save_as(tmp)
    return out


def _segmentation(hd: object, sources: list, frames: np.ndarray, descriptions: list, algorithm: str,
                  note: str | None = None) -> object:
    extra = {}
    if note:
        words = note.split()
        verdict = words[1].strip(":(").lower() if len(words) >= 2 and words[0] == "QC" else ""
        # CS allows A-Z, 0-9, space and underscore, 16 characters; LO 64 characters without backslashes.
        label = f"QC_{verdict.upper()}" if verdict in ("ok", "warn", "fail") else \
            "QC_UNCALIBRATED" if words[:1] == ["QC"] else "EDGEMED"
        extra = {"content_label": label, "content_description": _lo(note)}
    seg = hd.seg.Segmentation(  # type: ignore[attr-defined]
        source_images=sources, pixel_array=frames, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=900,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="edgemed", manufacturer_model_name=algorithm,
        software_versions="edgemed", device_serial_number="0", omit_empty_frames=False, **extra,
    )
    if note:
        seg.SeriesDescription = _lo(note)  # what PACS viewers list beside the series
    return seg


def _lo(text: str) -> str:
    """`text` as a DICOM LO value: no backslash or control characters, at most 64 characters."""
    clean = "".join(c if c.isprintable() and c != "\\" else " " for c in text)
    return clean if len(clean) <= 64 else clean[:61] + "..."


def _normal(ds: object) -> np.ndarray:
    o = np.asarray(ds.ImageOrientationPatient, float)  # type: ignore[attr-defined]
    return np.cross(o[:3], o[3:])


def _voxel_indices(ds: object, inv_affine: np.ndarray) -> np.ndarray:
    """(3, rows, cols) integer voxel indices, in the RAS label grid, of every pixel of a DICOM slice."""
    o = np.asarray(ds.ImageOrientationPatient, float)  # type: ignore[attr-defined]
    dr, dc = (float(v) for v in ds.PixelSpacing)  # type: ignore[attr-defined]  # row spacing, column spacing
    ipp = np.asarray(ds.ImagePositionPatient, float)  # type: ignore[attr-defined]
    r, c = np.mgrid[0:int(ds.Rows), 0:int(ds.Columns)]  # type: ignore[attr-defined]
    lps = ipp[:, None, None] + o[:3, None, None] * (c * dc) + o[3:, None, None] * (r * dr)
    ras = np.einsum("ij,jrc->irc", _LPS, lps)
    ijk = np.einsum("ij,jrc->irc", inv_affine[:3, :3], ras) + inv_affine[:3, 3, None, None]
    return np.rint(ijk).astype(np.int64)
