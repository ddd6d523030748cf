"""`edgemed demo --quick`: the main job runs end to end and reports real measurements."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np


def test_quick_demo_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    res = subprocess.run([sys.executable, "-m", "edgemed", "demo", "--quick", "--quiet", "--out", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr
    report = json.loads((out / "report.json").read_text())
    teacher, student, compressed = report["models"]
    assert [teacher["role"], student["role"]] == ["teacher", "student"]
    assert compressed["role"].startswith("pruned, ") and compressed["precision"] in ("int8", "fp32")
    assert compressed["parameters"] < student["parameters"] and report["prune"]["ratio"] == 0.5
    # The table printed is the one report.json holds, row by row.
    for row in report["models"]:
        assert row["role"] in res.stdout and f"{row['dice_vs_truth']:.3f}" in res.stdout
    assert student["parameters"] * 20 < teacher["parameters"]
    for row in report["models"]:
        assert 0.0 <= row["dice_vs_truth"] <= 1.0 and row["s_per_volume"] > 0
        assert len(row["dice_vs_truth_per_scan"]) == len(report["test_scans"]) == 1
    # Even the quick teacher has learnt something about the liver on an unseen phantom.
    assert teacher["dice_vs_truth"] > 0.3
    # All three are ONNX bundles timed in the same runtime; parity of both exports was checked.
    for name in ("teacher.edgemed", "liver.edgemed", "liver-compressed.edgemed"):
        assert (out / name / "manifest.json").is_file()
    assert report["export_parity"]["student"]["max_abs_logit_diff"] < 1e-3
    assert report["runtime"].startswith("edgemed.runtime")
    # The HTML report: both tables and one overlay per slice shown, as embedded PNGs (no matplotlib needed).
    page = (out / "report.html").read_text()
    assert "Dice vs truth" in page and "ms / volume" in page
    assert page.count("data:image/png;base64,") == 3
    assert f"report: {out / 'report.html'}" in res.stdout


def test_png_and_disagreement_slices() -> None:
    """The report's images are valid PNGs, and the slices shown are where the masks differ most."""
    import zlib

    from edgemed.cli._demo_report import disagreement_slices, encode_png, overlay_rgb

    a = np.zeros((10, 8, 12), bool)
    b = a.copy()
    a[2:6, 2:6, 1:11] = True
    b[2:6, 2:6, 1:11] = True
    b[2:8, 2:8, 7] = True   # 20 voxels differ at z=7
    b[2:7, 2:6, 3] = True   # 4 at z=3
    b[2:6, 2:7, 9] = True   # 4 at z=9
    assert disagreement_slices(a, b) == [3, 7, 9]
    assert disagreement_slices(a, a, count=1) != []  # agreeing masks: the slices with most organ
    rgb = overlay_rgb(np.zeros(a.shape, np.float32), {"teacher": a, "student": b}, 7, (2.0, 2.0, 5.0), scale=2)
    assert rgb.shape == (16, 20, 3) and rgb.dtype == np.uint8
    png = encode_png(rgb)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    idat = png[png.index(b"IDAT") + 4:png.index(b"IEND") - 8]
    raw = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(16, 1 + 20 * 3)
    np.testing.assert_array_equal(raw[:, 1:].reshape(16, 20, 3), rgb)
