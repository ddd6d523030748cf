"""No DICOM identifier reaches an artifact, a report or a log (issue 8, privacy).

A phantom CT is written as a DICOM series that carries a patient name, ID, birth date, study dates
and UIDs, in a folder named after the patient and files named by their SOP instance UIDs, as
hospital exports are. It is then distilled, exported, segmented and profiled through the CLI; every
byte written (gzip members decompressed, zip members read) and everything printed is searched for
the identifiers. The DICOM-SEG output is the one exception by design: it belongs to the patient's
study and must reference it (see the README).
"""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from edgemed.cli import main
from edgemed.io import read_volume
from edgemed.phantom import PhantomConfig, make_phantom

UID_ROOT = "1.2.826.0.1.3680043.8.498.4711"
SECRETS = {
    "patient name": "MUSTERMANN^ERIKA",
    "family name": "MUSTERMANN",
    "given name": "ERIKA",
    "patient id": "PID-SECRET-4711",
    "birth date": "19510704",
    "study date": "20240131",
    "series date": "20240201",
    "accession": "ACC-998877",
    "uid root": UID_ROOT,
}


def _write_series(folder: Path, hu: np.ndarray, spacing: tuple[float, float, float]) -> None:
    """`hu` (i, j, k) as axial slices: stored (row=j, col=i), positions along +z in LPS."""
    folder.mkdir(parents=True)
    for k in range(hu.shape[2]):
        sop = f"{UID_ROOT}.3.{k + 1}"
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = (f"{UID_ROOT}.1", f"{UID_ROOT}.2",
                                                                            f"{UID_ROOT}.4")
        ds.PatientName, ds.PatientID = SECRETS["patient name"], SECRETS["patient id"]
        ds.PatientBirthDate, ds.StudyDate = SECRETS["birth date"], SECRETS["study date"]
        ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = SECRETS["series date"]
        ds.AccessionNumber = SECRETS["accession"]
        ds.StudyTime, ds.StudyID, ds.ReferringPhysicianName, ds.PatientSex = "120000", "1", "", "O"
        ds.Modality, ds.Manufacturer, ds.KVP = "CT", "ACME", "120"
        ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = 3, k + 1, "ABDOMEN"
        ds.ImagePositionPatient = [0.0, 0.0, float(k * spacing[2])]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]
        ds.SliceThickness = float(spacing[2])
        ds.Rows, ds.Columns = hu.shape[1], hu.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.PixelData = np.ascontiguousarray(np.round(hu[:, :, k].T + 1024).astype(np.int16)).tobytes()
        pydicom.dcmwrite(folder / f"{sop}.dcm", ds, enforce_file_format=True)


def _texts(path: Path) -> list[tuple[str, bytes]]:
    """Every file under `path` as bytes, with gzip and zip members expanded."""
    out = []
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        data = f.read_bytes()
        out.append((str(f), data))
        if data[:2] == b"\x1f\x8b":
            out.append((f"{f} (gunzip)", gzip.decompress(data)))
        if zipfile.is_zipfile(f):
            with zipfile.ZipFile(f) as z:
                out += [(f"{f}:{n}", z.read(n)) for n in z.namelist()]
    return out


def _leaks(blobs: list[tuple[str, bytes]]) -> list[str]:
    found = []
    for where, data in blobs:
        lowered = data.lower()
        for what, value in SECRETS.items():
            at = lowered.find(value.lower().encode())
            if at >= 0:
                found.append(f"{what} in {where}: ...{data[max(0, at - 60):at + 40]!r}...")
    return found


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_no_dicom_identifier_reaches_artifacts_reports_or_logs(tmp_path: Path,
                                                              capfd: pytest.CaptureFixture[str]) -> None:
    ct, labels = make_phantom(5, PhantomConfig(shape=(48, 40, 16), spacing_mm=(8.0, 8.0, 10.0)))
    scan = tmp_path / "exports" / f"{SECRETS['family name']}_{SECRETS['given name']}_{SECRETS['birth date']}"
    _write_series(scan, ct.array, (8.0, 8.0, 10.0))
    volume = read_volume(scan)
    assert volume.shape == ct.shape
    # The phantom's labels on the grid the DICOM reads back as (LPS rows/columns → RAS): match by HU.
    flips = [(a, b) for a in (False, True) for b in (False, True)]
    a, b = next((a, b) for a, b in flips
                if np.allclose(ct.array[::-1 if a else 1, ::-1 if b else 1], volume.array, atol=1.0))
    teacher = tmp_path / "teacher.nii.gz"
    nib.save(nib.Nifti1Image(np.ascontiguousarray(labels.array[::-1 if a else 1, ::-1 if b else 1]).astype(np.uint8),
                             volume.affine), teacher)

    out = tmp_path / "out"
    main(["distill", "--scans", str(scan), "--teacher-predictions", str(teacher), "--organ", "liver",
          "--out", str(out / "student"), "--widths", "8", "16", "32", "--epochs", "2", "--spacing-mm", "8", "8",
          "--context-slices", "1", "--threads", "1", "--quiet"])
    main(["export", str(out / "student"), "--out", str(out / "liver.edgemed"), "--parity-scans", str(scan)])
    main(["segment", str(out / "liver.edgemed"), str(scan), "--out", str(out / "mask.nii.gz"), "--threads", "1",
          "--json"])
    main(["profile", str(out / "liver.edgemed"), "--scan", str(scan), "--teacher-predictions", str(teacher),
          "--repeats", "2", "--warmup", "1", "--threads", "1", "--out", str(out / "report")])
    # The DICOM-SEG output does carry the identifiers (it must), so it is written outside `out`.
    main(["segment", str(out / "liver.edgemed"), str(scan), "--out", str(tmp_path / "m2.nii.gz"), "--threads", "1",
          "--dicom-seg", str(tmp_path / "clinical" / "seg.dcm")])
    logs = capfd.readouterr()

    written = _texts(out)
    assert any(name.endswith("manifest.json") for name, _ in written) and any("report" in n for n, _ in written)
    assert _leaks(written) == []
    assert _leaks([("stdout", logs.out.encode()), ("stderr", logs.err.encode())]) == []
    # The placeholders show where names were redacted (so the check above is not vacuous).
    assert b"[redacted]" in b"".join(d for _, d in written) + logs.err.encode() + logs.out.encode()
    assert _leaks(_texts(tmp_path / "clinical")), "the DICOM-SEG should reference the patient's study"
