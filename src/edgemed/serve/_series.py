"""Write a CT volume as a DICOM series (CT Image Storage, one file per axial slice): what a scanner would
send the node. For tests, benchmarks and trying the node out; not a general DICOM writer."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from edgemed.io import Volume

__all__ = ["write_ct_series"]

_LPS = np.diag([-1.0, -1.0, 1.0, 1.0])


def write_ct_series(volume: Volume, folder: str | os.PathLike[str], *, study_uid: str, series_uid: str,
                    patient_name: str = "ANONYMOUS", patient_id: str = "0", series_description: str = "CT",
                    body_part: str = "ABDOMEN") -> list[Path]:
    """Write `volume` (HU, canonical RAS, axial slices along k) as DICOM CT slices in `folder`.

    Args:
        study_uid, series_uid: The study and series the slices belong to (SOP instance UIDs are derived).
        patient_name, patient_id: What the headers say about the patient (tests put sentinels here).

    Returns:
        The files written, in slice order.
    """
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    lps = _LPS @ volume.affine  # voxel (i, j, k) → LPS mm
    col_dir, row_dir = lps[:3, 0], lps[:3, 1]  # DICOM columns run along i, rows along j
    spacing_i, spacing_j = (float(np.linalg.norm(v)) for v in (col_dir, row_dir))
    orientation = [*(col_dir / spacing_i), *(row_dir / spacing_j)]
    hu = np.asarray(volume.array, dtype=np.float32)
    frame_uid = generate_uid(entropy_srcs=[series_uid, "frame"])
    files = []
    for k in range(hu.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[series_uid, str(k)])
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient_name, patient_id, "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20260101", "120000", "1", ""
        ds.ReferringPhysicianName = ""
        ds.Modality, ds.Manufacturer, ds.BodyPartExamined = "CT", "edgemed", body_part
        ds.SeriesDescription, ds.SeriesNumber, ds.InstanceNumber = series_description, 1, k + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImagePositionPatient = [float(v) for v in lps[:3] @ np.array([0, 0, k, 1.0])]
        ds.ImageOrientationPatient = [round(float(v), 8) for v in orientation]
        ds.PixelSpacing = [spacing_j, spacing_i]  # row spacing (along j), column spacing (along i)
        ds.SliceThickness = float(np.linalg.norm(lps[:3, 2]))
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
        pixels = np.clip(np.rint(hu[:, :, k].T), -32768, 32767).astype(np.int16)  # (rows=j, cols=i)
        ds.PixelData = pixels.tobytes()
        path = out / f"{k + 1:04d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        files.append(path)
    return files
