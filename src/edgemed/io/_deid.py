"""Keep DICOM identifiers out of everything edgemed writes: artifacts, reports, logs and messages.

`Volume.meta` holds only non-identifying facts (see `_dicom._safe_meta`). What remains are names:
folders and files of DICOM exports are often called after the patient ("DOE_JANE_19510704") or
after UIDs ("1.2.840.113619.2.55.3.604688119.969.1268071029.320.dcm"). Such names reach
`Volume.source`, which artifacts, reports and messages use, so they pass through `redact` first.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = ["IDENTIFYING_KEYWORDS", "identifiers", "redact", "redacted_path"]

# The identifying attributes edgemed knows of (PS3.15 Annex E's basic profile, the ones that
# occur in CT/MR image headers), whose values are removed from any name edgemed records.
IDENTIFYING_KEYWORDS = (
    "PatientName", "PatientID", "OtherPatientIDs", "IssuerOfPatientID", "PatientBirthDate", "PatientBirthTime",
    "PatientAddress", "PatientTelephoneNumbers", "OtherPatientNames", "PatientMotherBirthName",
    "MedicalRecordLocator", "AccessionNumber", "StudyID", "StudyDate", "SeriesDate", "AcquisitionDate",
    "ContentDate", "InstanceCreationDate", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID",
    "FrameOfReferenceUID", "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName",
    "InstitutionName", "InstitutionAddress", "StationName", "DeviceSerialNumber",
)
_UID = re.compile(r"\d+(?:\.\d+){3,}")
_DATE = re.compile(r"(?<!\d)(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?!\d)")
_MIN_PART = 3  # shorter name parts ("LI", "O") would blank out ordinary words


def identifiers(datasets: Iterable["Dataset"]) -> list[str]:
    """The identifying values in `datasets` (and the parts of person names), longest first."""
    found: set[str] = set()
    for ds in datasets:
        for keyword in IDENTIFYING_KEYWORDS:
            value = ds.get(keyword, None)
            if value is None or value == "":
                continue
            values = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
            for v in values:
                text = str(v).strip()
                if len(text) >= _MIN_PART:
                    found.add(text)
                # Person names: family^given^middle^prefix^suffix; each part may appear alone in a name.
                found.update(p for p in re.split(r"[\^=\s,]+", text) if len(p) >= _MIN_PART)
    return sorted(found, key=len, reverse=True)


def redact(text: str, known: Iterable[str] = ()) -> str:
    """`text` with known identifiers, UIDs and calendar dates (YYYYMMDD) replaced by placeholders."""
    for value in known:
        text = re.sub(re.escape(value), "[redacted]", text, flags=re.IGNORECASE)
    text = _UID.sub("[uid]", text)
    return _DATE.sub("[date]", text)


def redacted_path(path: str | os.PathLike[str] | object) -> str:
    """A scan path as edgemed may print or record it: for DICOM, its identifiers and UIDs redacted.

    DICOM exports are often named after the patient, and what edgemed prints or records ends up in
    CI and device logs, run folders and reports. One header of the series tells which names to
    remove; other paths are returned unchanged.
    """
    from edgemed.io._dicom import read_header

    p = Path(str(path))
    try:
        first = p if p.is_file() else next((f for f in sorted(p.iterdir()) if f.is_file()), None)
        with warnings.catch_warnings():  # the header was read (and warned about) where the scan was read
            warnings.simplefilter("ignore")
            header = read_header(first) if first is not None else None
    except Exception:  # noqa: BLE001 (an unreadable path is reported where it is read, not here)
        header = None
    return redact(str(p), identifiers([header])) if header is not None else str(p)
