"""CLI path from student to mask: export (parity-checked) → segment, and their errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgemed.artifacts import PreprocessSpec
from edgemed.compress import DistillConfig, distill
from edgemed.io import read_labels, read_volume, write_nifti
from edgemed.phantom import PhantomConfig, make_phantom

SMALL = PhantomConfig(shape=(48, 40, 24), spacing_mm=(8.0, 8.0, 10.0))


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgemed", *args], capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def student(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cli_export")
    ct, labels = make_phantom(7, SMALL)
    scan = write_nifti(ct, root / "ct.nii.gz")
    seg = write_nifti(labels, root / "seg.nii.gz")
    cfg = DistillConfig(organs=("liver",), student_kwargs={"widths": [8, 16, 32]}, epochs=6, lr=1e-2, threads=2,
                        preprocess=PreprocessSpec(spacing_mm=(8.0, 8.0), context_slices=1, pad_multiple=4))
    distill([scan], cfg, root / "student", teacher_predictions=[seg], progress=False)
    return root / "student", scan


def test_export_then_segment(student: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, scan = student
    bundle = tmp_path / "liver.edgemed"
    res = _run(["export", str(ckpt), "--out", str(bundle), "--parity-scans", str(scan), "--json"])
    assert res.returncode == 0, res.stderr
    parity = json.loads(res.stdout)
    assert parity["max_abs_logit_diff"] < 1e-3
    assert parity["mask_dice"]["liver"] >= 0.999
    mask_path = tmp_path / "mask.nii.gz"
    res = _run(["segment", str(bundle), str(scan), "--out", str(mask_path), "--json"])
    assert res.returncode == 0, res.stderr
    report = json.loads(res.stdout)
    assert report["timings_ms"]["inference_ms"] > 0
    mask = read_labels(mask_path, like=read_volume(scan))
    assert set(np.unique(mask.array)) <= {0, 5}
    assert report["voxels"]["liver"] == int((mask.array == 5).sum()) > 0


def test_segment_refuses_an_altered_bundle(student: tuple[Path, Path], tmp_path: Path) -> None:
    ckpt, scan = student
    bundle = tmp_path / "b"
    assert _run(["export", str(ckpt), "--out", str(bundle)]).returncode == 0
    model = bundle / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    res = _run(["segment", str(bundle), str(scan), "--out", str(tmp_path / "m.nii.gz")])
    assert res.returncode == 1
    assert "altered" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "m.nii.gz").exists()


def test_segment_a_dicom_series_to_dicom_seg(student: tuple[Path, Path], tmp_path: Path, real_data: Path) -> None:
    ckpt, scan = student
    bundle = tmp_path / "b"
    assert _run(["export", str(ckpt), "--out", str(bundle)]).returncode == 0
    series = real_data / "dcmqi_ct3slice" / "ct"
    res = _run(["segment", str(bundle), str(series), "--out", str(tmp_path / "m.nii.gz"),
                "--dicom-seg", str(tmp_path / "m.dcm")])
    assert res.returncode == 0, res.stderr
    assert "JANCT000" not in res.stderr + res.stdout  # no patient identifier in our output
    ct = read_volume(series)
    nifti = read_labels(tmp_path / "m.nii.gz", like=ct).array
    seg = read_labels(tmp_path / "m.dcm", like=ct).array
    np.testing.assert_array_equal(seg > 0, nifti == 5)
    wrong = _run(["segment", str(bundle), str(scan), "--out", str(tmp_path / "x.nii.gz"),
                  "--dicom-seg", str(tmp_path / "x.dcm")])
    assert wrong.returncode == 2 and "DICOM series folder" in wrong.stderr
