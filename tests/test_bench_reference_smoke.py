"""Smoke test of benchmarks/suite/reference_teacher.py on a tiny teacher and student (a few seconds)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _bench():  # type: ignore[no-untyped-def]
    path = ROOT / "benchmarks" / "suite" / "reference_teacher.py"
    spec = importlib.util.spec_from_file_location("reference_teacher", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_sliding_window_geometry() -> None:
    bench = _bench()
    assert bench.window_starts(244, 128) == [0, 58, 116]  # nnU-Net: 3 steps, last flush with the end
    assert bench.window_starts(128, 128) == [0]
    assert bench.window_starts(100, 128) == [0]
    g = bench.gaussian_weight((16, 16, 16))
    assert g.max() == pytest.approx(1.0) and g.min() > 0 and g[0, 0, 0] < g[8, 8, 8]


def test_benchmark_tiny(real_data: Path, tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from edgemed.artifacts import PreprocessSpec
    from edgemed.compress import DistillConfig, distill

    bench = _bench()
    ct, seg = real_data / "totalseg" / "example_ct.nii.gz", real_data / "totalseg" / "example_seg_fast_force_split.nii.gz"
    config = DistillConfig(organs=("liver",), epochs=1, student_kwargs={"widths": [8, 16, 32]}, threads=1,
                           ema_decay=None, preprocess=PreprocessSpec(spacing_mm=(6.0, 6.0), context_slices=1, pad_multiple=4))
    student = distill([ct], config, tmp_path / "student", teacher_predictions=[seg], progress=False)
    report = bench.benchmark(ct=ct, seg=seg, student=Path(student.path), work=tmp_path, windows=3, repeats=5,
                             threads=1, budget_s=0.0, patch=(32, 32, 32), features=(4, 8, 8, 8), classes=3,
                             backends=("ort",))
    t = report["teacher"]
    assert t["extrapolated"] and t["windows_timed"] == 3 and t["windows_total"] > 3
    assert t["seconds_per_volume"] > 0 and t["input_shape_1p5mm"][0] > 200
    s = report["student"]["backends"]["ort"]
    assert s["repeats"] == 5 and s["ms_median"] > 0 and 0 <= s["overhead_fraction_median"] <= 1
    # Shares are per-stage medians over the median total: how they add up depends on the machine's
    # load (unit tests assert no timings), so only their form is checked here.
    assert set(s["share_of_total"]) >= {"preprocess", "inference", "postprocess"}
    assert all(0.0 <= v <= 1.5 for v in s["share_of_total"].values())
    assert report["ratio_teacher_over_student"]["ort"] > 0 and report["host"]["onnxruntime"]
