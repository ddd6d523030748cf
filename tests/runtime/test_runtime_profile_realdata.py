"""`profile_bundle` on the real CT with TotalSegmentator's labels as the teacher."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgemed.measure import profile_bundle
from edgemed.runtime import OnnxBundle


@pytest.mark.realdata
def test_profile_on_the_real_ct(real_data: Path, real_bundle: OnnxBundle, tmp_path: Path) -> None:
    ct = real_data / "totalseg" / "example_ct.nii.gz"
    seg = real_data / "totalseg" / "example_seg_fast_force_split.nii.gz"
    report = profile_bundle(real_bundle.path, ct, teacher_predictions=seg, backend="ort", repeats=2, warmup=1,
                            batch_sizes=(1, 4), out_dir=tmp_path / "profile")
    raw = json.loads(report.report_json.read_text())
    stages = raw["stages"]
    for stage in ("read", "preprocess", "inference", "postprocess", "write", "total"):
        assert 0 < stages[stage]["p50_ms"] <= stages[stage]["p90_ms"] <= stages[stage]["p99_ms"], stage
    assert raw["model"]["flops_per_slice"] > 0
    (liver,) = [a for a in raw["accuracy"] if a["organ"] == "liver" and a["reference"] == "teacher"]
    assert 0.0 < liver["dice"] <= 1.0  # a 4-epoch student on the real CT: some liver, not exact
    assert report.overlay_png.is_file() and report.report_md.is_file()
