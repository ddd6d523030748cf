"""Keep DICOM identifiers out of everything edgemed writes: artifacts, reports, logs and messages.

`Volume.meta` holds only non-identifying facts (see `_dicom._safe_meta`). What remains are names:
folders and files of DICOM exports are often called after the patient ("DOE_JANE_19510704") or
after UIDs ("1.2.840.113619.2.55.3.604688119.969.1268071029.320.dcm"). Such names reach
`Volume.source`, which artifacts, reports and messages use, so they pass through `redact` first.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = ["IDENTIFYING_KEYWORDS", "RedactingLogFilter", "identifiers", "redact", "redact_library_logs", "redacted_path"]

# PS3.15 Annex E, Table E.1-1: the attributes the Basic Application Level Confidentiality Profile
# removes, blanks or replaces (those pydicom names; sequences are searched inside). Their values are
# removed from any text edgemed prints, records or raises, and never kept in `Volume.meta`.
IDENTIFYING_KEYWORDS = (
    # the patient
    "PatientName", "PatientID", "OtherPatientIDs", "OtherPatientIDsSequence", "IssuerOfPatientID", "PatientBirthDate",
    "PatientBirthTime", "PatientBirthName", "PatientAddress", "PatientTelephoneNumbers", "OtherPatientNames",
    "PatientMotherBirthName", "PatientAge", "PatientSize", "PatientWeight", "PatientComments", "PatientState",
    "PatientInstitutionResidence", "PatientReligiousPreference", "PatientSexNeutered", "PatientTransportArrangements",
    "MedicalRecordLocator", "MedicalAlerts", "Allergies", "EthnicGroup", "Occupation", "MilitaryRank",
    "BranchOfService", "CountryOfResidence", "RegionOfResidence", "AdditionalPatientHistory", "SmokingStatus",
    "PregnancyStatus", "SpecialNeeds", "CurrentPatientLocation", "InsurancePlanIdentification",
    "ReferencedPatientSequence", "ReferencedPatientAliasSequence", "ResponsiblePerson", "ResponsibleOrganization",
    # the visit, order and study
    "AccessionNumber", "AdmissionID", "IssuerOfAdmissionID", "AdmittingDate", "AdmittingTime",
    "AdmittingDiagnosesDescription", "ServiceEpisodeID", "ServiceEpisodeDescription", "IssuerOfServiceEpisodeID",
    "VisitComments", "StudyID", "StudyIDIssuer", "StudyDescription", "StudyComments", "ReasonForStudy",
    "ReasonForTheImagingServiceRequest", "RequestedProcedureDescription", "RequestedProcedureID",
    "RequestedProcedureComments", "RequestedProcedureLocation", "RequestedContrastAgent", "RequestingPhysician",
    "RequestingService", "RequestAttributesSequence", "PlacerOrderNumberImagingServiceRequest",
    "FillerOrderNumberImagingServiceRequest", "ImagingServiceRequestComments", "OrderEnteredBy",
    "OrderEntererLocation", "OrderCallbackPhoneNumber", "ReferencedStudySequence",
    "ReferencedPerformedProcedureStepSequence", "PerformedProcedureStepID", "PerformedProcedureStepDescription",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime", "PerformedLocation",
    "CommentsOnThePerformedProcedureStep", "ScheduledProcedureStepDescription", "ScheduledProcedureStepLocation",
    "ScheduledProcedureStepStartDate", "ScheduledProcedureStepStartTime", "ScheduledProcedureStepEndDate",
    "ScheduledProcedureStepEndTime", "ScheduledStudyLocation", "ScheduledStudyLocationAETitle",
    # the series, the acquisition and the images
    "SeriesDescription", "ProtocolName", "AcquisitionComments", "AcquisitionProtocolDescription",
    "AcquisitionDeviceProcessingDescription", "ContrastBolusAgent", "DerivationDescription", "ImageComments",
    "FrameComments", "ImagePresentationComments", "IdentifyingComments", "TextComments", "TextString",
    "ContributionDescription", "ModifiedImageDescription", "SourceImageSequence", "ReferencedImageSequence",
    "IconImageSequence", "OriginalAttributesSequence", "ModifiedAttributesSequence",
    # dates and times
    "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "InstanceCreationDate", "OverlayDate", "CurveDate",
    "AcquisitionDateTime", "StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime", "InstanceCreationTime",
    "OverlayTime", "CurveTime", "TimezoneOffsetFromUTC",
    # people and organisations
    "ReferringPhysicianName", "ReferringPhysicianAddress", "ReferringPhysicianTelephoneNumbers",
    "ReferringPhysicianIdentificationSequence", "PerformingPhysicianName", "PerformingPhysicianIdentificationSequence",
    "NameOfPhysiciansReadingStudy", "PhysiciansReadingStudyIdentificationSequence", "PhysiciansOfRecord",
    "PhysiciansOfRecordIdentificationSequence", "OperatorsName", "OperatorIdentificationSequence",
    "ScheduledPerformingPhysicianName", "HumanPerformerName", "HumanPerformerOrganization", "ContentCreatorName",
    "ReviewerName", "VerifyingObserverName", "VerifyingOrganization", "PersonName", "PersonAddress",
    "PersonTelephoneNumbers", "InterpretationAuthor", "InterpretationRecorder", "InterpretationTranscriber",
    "PhysicianApprovingInterpretation", "DistributionName", "DistributionAddress", "NamesOfIntendedRecipientsOfResults",
    "InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "InstitutionCodeSequence",
    # devices and places
    "StationName", "DeviceSerialNumber", "DeviceUID", "DetectorID", "GantryID", "GeneratorID", "CassetteID", "PlateID",
    "ModifyingDeviceID", "ModifyingDeviceManufacturer", "PerformedStationAETitle", "PerformedStationName",
    "ScheduledStationAETitle", "ScheduledStationName",
    # UIDs (a UID names one study, series or image: it is an identifier too)
    "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "MediaStorageSOPInstanceUID", "FrameOfReferenceUID",
    "SynchronizationFrameOfReferenceUID", "ReferencedSOPInstanceUID", "ReferencedFrameOfReferenceUID",
    "RelatedFrameOfReferenceUID", "InstanceCreatorUID", "IrradiationEventUID", "StorageMediaFileSetUID",
    "DoseReferenceUID", "FiducialUID", "TransactionUID", "UID",
)
_NUMERIC_VRS = frozenset({"DS", "IS", "FL", "FD", "SL", "SS", "UL", "US", "SV", "UV"})
_UID = re.compile(r"\d+(?:\.\d+){3,}")
_DATE = re.compile(r"(?<!\d)(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?!\d)")
_MIN_PART = 3  # shorter name parts ("LI", "O") would blank out ordinary words


def identifiers(datasets: Iterable["Dataset"]) -> list[str]:
    """The identifying values in `datasets` (and the parts of person names), longest first."""
    found: set[str] = set()
    for ds in datasets:
        with warnings.catch_warnings():  # reading a malformed value warns with the value in the message
            warnings.simplefilter("ignore")
            _collect(ds, found, depth=0)
            _collect(getattr(ds, "file_meta", None), found, depth=0)
    return sorted(found, key=len, reverse=True)


def _collect(ds: "Dataset | None", found: set[str], *, depth: int) -> None:
    if ds is None or depth > 3:
        return
    from pydicom.datadict import tag_for_keyword

    for keyword in IDENTIFYING_KEYWORDS:
        tag = tag_for_keyword(keyword)
        if tag is None or tag not in ds:
            continue
        texts: list[str] = []
        raw = ds.get_item(tag)  # unconverted where not yet read: the value exactly as in the file
        raw_bytes = getattr(raw, "value", None)
        if isinstance(raw_bytes, bytes):
            texts.append(raw_bytes.decode("latin-1", "replace").strip(" \0"))
        try:
            element = ds[tag]
        except Exception:  # noqa: BLE001 (a value pydicom cannot convert: its raw text was taken above)
            element = None
        if element is not None and element.VR == "SQ":
            for item in element.value or ():
                _collect(item, found, depth=depth + 1)
            continue
        vr = element.VR if element is not None else str(getattr(raw, "VR", "") or "")
        if vr in _NUMERIC_VRS:
            continue  # a height or weight is not text that names anyone, and blanking digits garbles messages
        if element is not None:
            value = element.value
            values = value if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue" else [value]
            texts += [str(v).strip() for v in values if v is not None and not isinstance(v, bytes)]
        for text in texts:
            _add(text, found, person=vr == "PN")


def _add(text: str, found: set[str], *, person: bool) -> None:
    parts = text.split("\\")  # a multi-valued raw value is backslash-separated
    found.update(p.strip() for p in [text, *parts] if len(p.strip()) >= _MIN_PART)
    if person:
        # Person names: family^given^middle^prefix^suffix; each part may appear alone in a name.
        found.update(p for p in re.split(r"[\^=\s,\\]+", text) if len(p) >= _MIN_PART)


_QUOTED = re.compile(r"('[^']*'|\"[^\"]*\")")


class RedactingLogFilter(logging.Filter):
    """Blank quoted values, UIDs and dates in a library's log records (pydicom and highdicom log the
    header values they could not convert: a birth date, a name), for an application that shows logs."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 (a record that cannot format: drop its arguments, keep the template)
            message = str(record.msg)
        record.msg, record.args = redact(_QUOTED.sub("'[redacted]'", message)), ()
        return True


def redact_library_logs() -> None:
    """Install `RedactingLogFilter` on the loggers of the DICOM libraries edgemed calls (idempotent)."""
    for name in ("pydicom", "highdicom"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingLogFilter) for f in logger.filters):
            logger.addFilter(RedactingLogFilter())


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
