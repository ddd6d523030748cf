"""Helpers for the io tests: synthetic DICOM CT slices and the geometry they should read back as."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

# Identifying values planted in synthetic files: none may ever reach Volume.meta.
PATIENT_NAME = "DOE^JANE"
PATIENT_ID = "PID-123456"
STUDY_DATE = "20240131"

# write_ct_series(...) -> (folder, raw stored slices (n, rows, cols) int16 in position order, IPP per slice (LPS mm)).
SeriesWriter = Callable[..., tuple[Path, np.ndarray, np.ndarray]]


def make_ct_slice(raw: np.ndarray, position_lps: Sequence[float], *, series_uid: str,
                  orientation: Sequence[float] = (1, 0, 0, 0, 1, 0), spacing_mm: Sequence[float] = (0.8, 0.6),
                  series_number: int = 3, padding_value: int | None = None) -> Dataset:
    """One CT slice as a pydicom dataset (explicit VR little endian, HU = stored - 1024)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = "1.2.3.4.5"
    ds.SeriesInstanceUID = series_uid
    ds.FrameOfReferenceUID = "1.2.3.4.6"
    ds.PatientName = PATIENT_NAME
    ds.PatientID = PATIENT_ID
    ds.StudyDate = STUDY_DATE
    # Type 2 attributes highdicom copies into a DICOM-SEG made from these slices.
    ds.StudyTime = "120000"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.Modality = "CT"
    ds.Manufacturer = "ACME"
    ds.ManufacturerModelName = "Scanner 9000"
    ds.KVP = "120"
    ds.SeriesNumber = series_number
    ds.SeriesDescription = "ABDOMEN"
    ds.ImagePositionPatient = [float(v) for v in position_lps]
    ds.ImageOrientationPatient = [float(v) for v in orientation]
    ds.PixelSpacing = [float(v) for v in spacing_mm]
    ds.SliceThickness = 2.5
    ds.Rows, ds.Columns = raw.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    if padding_value is not None:
        ds.PixelPaddingValue = padding_value
    ds.PixelData = np.ascontiguousarray(raw, dtype=np.int16).tobytes()
    return ds


def expected_from_series(raw: np.ndarray, positions_lps: np.ndarray, orientation: Sequence[float],
                         spacing_mm: Sequence[float] = (0.8, 0.6)) -> tuple[np.ndarray, np.ndarray]:
    """World (RAS, mm) position of every stored voxel and its HU, flattened: (N, 3), (N,)."""
    rows, columns = raw.shape[1:]
    k, r, c = np.meshgrid(np.arange(raw.shape[0]), np.arange(rows), np.arange(columns), indexing="ij")
    row_cos, col_cos = np.asarray(orientation[:3], float), np.asarray(orientation[3:], float)
    lps = (positions_lps[k.ravel()] + c.ravel()[:, None] * spacing_mm[1] * row_cos
           + r.ravel()[:, None] * spacing_mm[0] * col_cos)
    ras = lps * np.array([-1.0, -1.0, 1.0])
    return ras, raw.ravel().astype(np.float32) - 1024.0


def read_raw_dicom(path: Path) -> np.ndarray:
    """The stored pixel values of one DICOM file (no rescale)."""
    return pydicom.dcmread(path).pixel_array
