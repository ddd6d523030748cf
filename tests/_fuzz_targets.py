"""Fuzz targets for edgemed's loaders, shared by the CI fuzz test and benchmarks/suite/fuzz_loaders.py.

Contract under test: whatever bytes a loader is given, it returns normally or raises an
`EdgemedError` (whose message says what is wrong), within a time limit. Any other exception is a
finding (a deep library traceback reaching the user), and so is a hang or a crash of the process.

Inputs are hypothesis-generated mutations of valid seed files (bit flips, overwritten bytes and
integers at header offsets, truncation, insertion, deletion, splices) plus raw random bytes; the
manifest and bundle targets also get structurally valid JSON with values replaced by random JSON.
"""

from __future__ import annotations

import gzip
import json
import signal
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from hypothesis import strategies as st

from edgemed.errors import EdgemedError

TIME_LIMIT_S = 10


class Hang(Exception):
    """An input took longer than TIME_LIMIT_S."""


@dataclass
class Target:
    """One loader: `run(data)` writes the input where the loader expects it and calls the loader."""

    name: str
    seeds: list[bytes]
    run: Callable[[bytes], Any]
    json_seed: dict[str, Any] | None = None
    inputs: int = 0
    refused: int = 0
    accepted: int = 0
    findings: list[str] = field(default_factory=list)

    def check(self, data: bytes) -> None:
        """Run one input under the contract; record and raise anything outside it."""
        self.inputs += 1
        previous = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(TIME_LIMIT_S)
        try:
            self.run(data)
            self.accepted += 1
        except EdgemedError:
            self.refused += 1
        except Hang:
            self.findings.append(f"hang > {TIME_LIMIT_S}s on {len(data)} bytes")
            raise
        except Exception as err:  # noqa: BLE001 (the point: anything else is a finding)
            self.findings.append(f"{type(err).__module__}.{type(err).__name__}: {str(err)[:200]}")
            raise
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)


def _alarm(signum: int, frame: Any) -> None:
    raise Hang()


# ---- input strategies --------------------------------------------------------------------------

_INT_EDGES = [0, 1, -1, 2, 3, 7, 8, 255, 256, 32767, -32768, 65535, 2**31 - 1, -(2**31), 2**32 - 1]


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed with 1-8 mutations, biased to the first 512 bytes (headers)."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(1, 8))):
        n = len(data)
        header = draw(st.booleans())
        pos = draw(st.integers(0, max(0, min(n, 512 if header else n) - 1)))
        op = draw(st.sampled_from(["flip", "byte", "int", "float", "truncate", "insert", "delete", "splice"]))
        if n == 0:
            data += draw(st.binary(min_size=1, max_size=64))
        elif op == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "byte":
            data[pos] = draw(st.integers(0, 255))
        elif op in ("int", "float"):
            fmt = draw(st.sampled_from(["<h", "<i", "<H", ">h", ">i"])) if op == "int" else draw(st.sampled_from(["<f", "<d"]))
            if op == "int":
                lo, hi = {"<h": (-(2**15), 2**15 - 1), ">h": (-(2**15), 2**15 - 1), "<H": (0, 2**16 - 1),
                          "<i": (-(2**31), 2**31 - 1), ">i": (-(2**31), 2**31 - 1)}[fmt]
                v = draw(st.sampled_from([x for x in _INT_EDGES if lo <= x <= hi]) | st.integers(lo, hi))
            else:
                v = draw(st.sampled_from([0.0, -0.0, 1e-30, -1.0, 1e30, float("inf"), float("-inf"), float("nan")]))
            value = struct.pack(fmt, v)
            data[pos:pos + len(value)] = value
        elif op == "truncate":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=64))
        elif op == "delete":
            del data[pos:pos + draw(st.integers(1, 64))]
        else:
            other = draw(st.sampled_from(seeds))
            start = draw(st.integers(0, max(0, len(other) - 1)))
            data[pos:pos + 32] = other[start:start + 32]
    return bytes(data)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=10,
)


@st.composite
def json_mutated(draw: st.DrawFn, seed: dict[str, Any]) -> bytes:
    """The seed JSON with 1-3 values (at any depth) replaced by random JSON, or keys deleted."""
    doc = json.loads(json.dumps(seed))
    for _ in range(draw(st.integers(1, 3))):
        node: Any = doc
        path = []
        while isinstance(node, (dict, list)) and node and draw(st.integers(0, 3)) > 0:
            key = draw(st.sampled_from(sorted(node) if isinstance(node, dict) else list(range(len(node)))))
            path.append((node, key))
            node = node[key]
        if not path:
            continue
        parent, key = path[-1]
        if isinstance(parent, dict) and draw(st.booleans()) and draw(st.booleans()):
            del parent[key]
        else:
            parent[key] = draw(_JSON)
    return json.dumps(doc, allow_nan=True).encode()


def strategy(target: Target) -> st.SearchStrategy[bytes]:
    """Mutated seeds mostly; JSON-aware mutations for JSON targets; some raw random bytes."""
    options = [mutated(target.seeds), mutated(target.seeds), st.binary(max_size=2048)]
    if target.json_seed is not None:
        options += [json_mutated(target.json_seed)] * 3
    return st.one_of(*options)


# ---- seeds and targets ---------------------------------------------------------------------------

def _nifti_seed(root: Path) -> tuple[bytes, bytes]:
    import nibabel as nib

    rng = np.random.default_rng(0)
    arr = (rng.normal(0, 300, (12, 10, 4))).astype(np.int16)
    affine = np.diag([2.0, 2.0, 3.0, 1.0])
    nib.save(nib.Nifti1Image(arr, affine), root / "seed.nii")
    nib.save(nib.Nifti1Image((arr > 0).astype(np.uint8), affine), root / "seed_labels.nii")
    return (root / "seed.nii").read_bytes(), (root / "seed_labels.nii").read_bytes()


def _dicom_seed() -> bytes:
    from io import BytesIO

    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = "1.2.3.4.5.6.7"
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, "1.2.3.4.5.6.7"
    ds.SeriesInstanceUID, ds.StudyInstanceUID = "1.2.3.4.5.6.8", "1.2.3.4.5.6.9"
    ds.Modality, ds.PatientName, ds.PatientID = "CT", "FUZZ^SEED", "F1"
    ds.ImagePositionPatient, ds.ImageOrientationPatient = [0.0, 0.0, 0.0], [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.PixelSpacing, ds.SliceThickness = [0.8, 0.8], 2.5
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = 8, 8, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
    ds.PixelData = np.arange(64, dtype=np.int16).tobytes()
    buf = BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


def make_targets(root: Path, bundle: Path | None) -> list[Target]:
    """The loader targets, with seeds written under `root`; the bundle targets need a bundle."""
    from edgemed.artifacts import read_manifest, verify_artifact
    from edgemed.io import read_labels, read_volume
    from edgemed.runtime import open_bundle

    root.mkdir(parents=True, exist_ok=True)
    nii, labels = _nifti_seed(root)
    like = read_volume(root / "seed.nii")

    def nifti(data: bytes) -> None:
        (root / "in.nii").write_bytes(data)
        read_volume(root / "in.nii")

    def nifti_gz(data: bytes) -> None:
        (root / "in.nii.gz").write_bytes(gzip.compress(data, compresslevel=1) if data[:2] != b"\x1f\x8b" else data)
        read_volume(root / "in.nii.gz")

    def label_map(data: bytes) -> None:
        (root / "lab.nii").write_bytes(data)
        read_labels(root / "lab.nii", like=like)

    def dicom(data: bytes) -> None:
        (root / "in.dcm").write_bytes(data)
        read_volume(root / "in.dcm")

    targets = [Target("nifti", [nii], nifti), Target("nifti_gz", [nii, gzip.compress(nii)], nifti_gz),
               Target("nifti_labels", [labels], label_map), Target("dicom", [_dicom_seed()], dicom)]
    if bundle is not None:
        work = root / "bundle"
        import shutil

        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(bundle, work)
        manifest_bytes = (bundle / "manifest.json").read_bytes()
        seed_json = json.loads(manifest_bytes)
        # The bundle's metadata with its own checksum re-computed, so mutations reach the parsers
        # behind the checksum (a user editing a manifest by hand gets there too).
        from edgemed.artifacts._manifest import CONTENT_SHA256, _content_sha256

        def manifest(data: bytes) -> None:
            (work / "manifest.json").write_bytes(data)
            read_manifest(work)

        def bundle_meta(data: bytes) -> None:
            try:
                doc = json.loads(data)
            except (ValueError, RecursionError):
                doc = None
            if isinstance(doc, dict):
                doc[CONTENT_SHA256] = _content_sha256(doc)
                data = json.dumps(doc, allow_nan=True).encode()
            (work / "manifest.json").write_bytes(data)
            opened = open_bundle(work)
            verify_artifact(work)
            opened.inputs, opened.outputs, opened.preprocess, opened.postprocess, opened.organs  # noqa: B018
            opened.parity, opened.validation_dice, opened.label_map, opened.precision, opened.opset  # noqa: B018

        targets += [Target("manifest", [manifest_bytes], manifest, json_seed=seed_json),
                    Target("bundle", [manifest_bytes], bundle_meta, json_seed=seed_json)]
    return targets
