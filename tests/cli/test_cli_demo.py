"""`edgemed demo --quick`: the main job runs end to end and reports real measurements."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_quick_demo_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    res = subprocess.run([sys.executable, "-m", "edgemed", "demo", "--quick", "--quiet", "--out", str(out)],
                         capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr
    assert "student" in res.stdout and "teacher" in res.stdout
    report = json.loads((out / "report.json").read_text())
    student, teacher = report["student"], report["teacher"]
    assert student["parameters"] * 20 < teacher["parameters"]
    for value in (student["dice_vs_teacher"], student["dice_vs_truth"], teacher["dice_vs_truth"]):
        assert 0.0 <= value <= 1.0
    # Even the quick teacher has learnt something about the liver on an unseen phantom.
    assert teacher["dice_vs_truth"] > 0.3
    assert (out / "liver_student" / "manifest.json").is_file()
    assert (out / "liver.edgemed" / "model.onnx").is_file()
    assert student["runtime_vs_torch_mask_dice"] >= 0.999
    assert student["export_parity"]["max_abs_logit_diff"] < 1e-3
    assert (out / "profile" / "report.md").is_file() and (out / "profile" / "overlay.png").is_file()
    assert json.loads((out / "profile" / "report.json").read_text())["stages"]["inference"]["p50_ms"] > 0
