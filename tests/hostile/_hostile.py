"""Helpers of the hostile tests: sentinel DICOM series, leak assertions, bundle copies."""

from __future__ import annotations

import shutil
from pathlib import Path

import pydicom
from pydicom.datadict import dictionary_VR, tag_for_keyword

from edgemed.io._deid import IDENTIFYING_KEYWORDS
from edgemed.runtime import OnnxBundle

# One sentinel per kind of value: any of them in a message, log or non-DICOM file is a leak.
SENTINEL_TEXT = "SENTINEL"          # inside every text value (PN, LO, SH, LT, ST, UT, CS, AE)
SENTINEL_DATE = "19010101"          # every DA (and the date part of every DT)
SENTINEL_TIME = "235959"            # every TM
SENTINEL_UID = "1.2.826.0.1.3680043.8.498.424242"  # the root of every UID
SENTINEL_AGE = "077Y"
SENTINELS = (SENTINEL_TEXT, SENTINEL_DATE, SENTINEL_TIME, SENTINEL_UID, SENTINEL_AGE)
_TEXT = {"PN": "SENTINEL^PN^1234", "LO": "SENTINEL-LO-1234", "SH": "SENTINEL-SH-12", "LT": "SENTINEL-LT-1234",
         "ST": "SENTINEL-ST-1234", "UT": "SENTINEL-UT-1234", "CS": "SENTINEL_CS", "AE": "SENTINEL_AE",
         "DA": SENTINEL_DATE, "TM": SENTINEL_TIME + ".42", "DT": SENTINEL_DATE + SENTINEL_TIME, "AS": SENTINEL_AGE}
_UID_KEYWORDS = {"StudyInstanceUID": 1, "SeriesInstanceUID": 2, "FrameOfReferenceUID": 4}



def sentinel_dataset(ds: pydicom.Dataset, index: int) -> None:
    """Overwrite (or add) every text-, date-, time- and UID-valued Basic Profile attribute with a sentinel."""
    for keyword in IDENTIFYING_KEYWORDS:
        tag = tag_for_keyword(keyword)
        if tag is None or tag >> 16 == 0x0002:
            continue
        vr = dictionary_VR(tag)
        if vr == "UI":
            value = f"{SENTINEL_UID}.{_UID_KEYWORDS[keyword]}" if keyword in _UID_KEYWORDS else (
                f"{SENTINEL_UID}.3.{index + 1}" if keyword == "SOPInstanceUID" else f"{SENTINEL_UID}.9")
        elif vr in _TEXT:
            value = _TEXT[vr]
        else:
            continue  # sequences and numbers (height, weight) carry no sentinel text
        ds.add_new(tag, vr, value)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID


def write_sentinel_series(folder: Path, source: Path, *, slices: int = 5) -> Path:
    """`slices` axial CT slices (made from the first real one, 512² from dcmqi) with every identifier a
    sentinel, in a folder and files named the way hospital exports name them (after the patient and UIDs)."""
    import numpy as np

    folder.mkdir(parents=True)
    template = pydicom.dcmread(sorted(source.glob("*.dcm"))[0])
    z0 = float(template.ImagePositionPatient[2])
    step = float(template.get("SliceThickness", 1.25) or 1.25)
    small = template.pixel_array[::8, ::8].copy()  # 64² keeps the tests fast; geometry stays consistent
    for k in range(slices):
        ds = pydicom.dcmread(sorted(source.glob("*.dcm"))[0])
        sentinel_dataset(ds, k)
        ds.Rows, ds.Columns = small.shape
        ds.PixelSpacing = [float(v) * 8 for v in template.PixelSpacing]
        ds.PixelData = np.ascontiguousarray(small).astype(template.pixel_array.dtype).tobytes()
        ds.ImagePositionPatient = [*map(float, template.ImagePositionPatient[:2]), z0 + k * step]
        ds.InstanceNumber = k + 1
        for private in [e.tag for e in ds if e.tag.is_private]:
            del ds[private]
        ds.save_as(folder / f"{ds.SOPInstanceUID}.dcm", enforce_file_format=True)
    return folder


def assert_no_sentinel(*texts: str | bytes, where: str = "") -> None:
    for text in texts:
        body = text.decode("latin-1") if isinstance(text, bytes) else text
        for sentinel in SENTINELS:
            assert sentinel.lower() not in body.lower(), f"{sentinel!r} leaked{f' into {where}' if where else ''}: " \
                f"...{body[max(0, body.lower().find(sentinel.lower()) - 200):][:400]}..."


def assert_tree_clean(root: Path, *, allow: tuple[Path, ...] = ()) -> None:
    """No sentinel in any file under `root` that edgemed wrote (the input series and `allow` excepted)."""
    import gzip

    for f in sorted(p for p in root.rglob("*") if p.is_file()):
        if f.suffix == ".dcm" or f in allow:
            continue
        data = f.read_bytes()
        if data[:2] == b"\x1f\x8b":
            data = gzip.decompress(data)
        assert_no_sentinel(data, where=str(f.relative_to(root)))


def copy_bundle(bundle: OnnxBundle, dst: Path) -> Path:
    shutil.copytree(bundle.path, dst)
    return dst
