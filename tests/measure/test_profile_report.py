"""`profile_bundle` and `edgemed profile`: percentiles, FLOPs (hand-counted), Dice, overlay, errors, no torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from _no_torch import run_without_torch
from click.testing import CliRunner

from edgemed.errors import ArtifactError, ConfigError, InputError
from edgemed.io import write_nifti
from edgemed.phantom import PhantomConfig, make_phantom
from edgemed.measure import count_flops, count_parameters, profile_bundle

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """A tiny phantom liver bundle, its scan and the teacher's label map (a few seconds)."""
    from _phantom_pairs import tiny_liver_bundle

    return tiny_liver_bundle(tmp_path_factory.mktemp("profile"))


def _one_conv(path: Path, *, group: int = 1) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((6, 4 // group, 3, 3), np.float32), "w")
    b = numpy_helper.from_array(np.zeros(6, np.float32), "b")
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1], strides=[2, 2], group=group)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, "h", "w"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[w, b])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_flops_of_one_conv_match_a_hand_count(tmp_path: Path) -> None:
    model = _one_conv(tmp_path / "conv.onnx")
    # x (2, 4, 10, 12), 3x3 stride 2 pad 1 → y (2, 6, 5, 6); MACs = outputs × Cin × 3 × 3.
    count = count_flops(model, {"x": (2, 4, 10, 12)})
    macs = 2 * 6 * 5 * 6 * 4 * 3 * 3
    assert count.macs == macs and count.flops == 2 * macs and count.by_op == {"Conv": 2 * macs}
    assert count_parameters(model) == 6 * 4 * 9 + 6
    grouped = count_flops(_one_conv(tmp_path / "g.onnx", group=2), {"x": (1, 4, 10, 12)})
    assert grouped.flops == 2 * (6 * 5 * 6 * 2 * 3 * 3)


def test_profile_report_contents(tiny: tuple[Path, Path, Path], tmp_path: Path) -> None:
    bundle, scan, seg = tiny
    report = profile_bundle(bundle, scan, teacher_predictions=seg, ground_truth=seg, repeats=2, warmup=1,
                            batch_sizes=(1, 4), threads=1, out_dir=tmp_path / "p")
    data = json.loads((tmp_path / "p" / "report.json").read_text())
    assert set(data["stages"]) == {"read", "preprocess", "inference", "postprocess", "write", "total"}
    for stage in data["stages"].values():
        assert 0 <= stage["p50_ms"] <= stage["p90_ms"] <= stage["p99_ms"] and stage["n"] == 2
    assert data["stages"]["inference"]["p50_ms"] > 0
    assert [b["batch_size"] for b in data["batches"]] == [1, 4]
    assert all(b["p50_ms"] <= b["p90_ms"] <= b["p99_ms"] and b["slices_per_s"] > 0 for b in data["batches"])
    model = data["model"]
    assert model["flops_per_slice"] > 0 and model["flops_per_volume"] == model["flops_per_slice"] * data["slices"]
    assert model["parameters"] > 0 and model["size_bytes"] > 0 and model["peak_gflops"] > 0
    assert model["achieved_gflops"] > 0 and 0 < model["peak_percent"]
    refs = {(a["organ"], a["reference"]): a for a in data["accuracy"]}
    assert set(refs) == {("liver", "teacher"), ("liver", "ground_truth")}
    assert 0.0 <= refs["liver", "teacher"]["dice"] <= 1.0
    assert data["memory"]["peak_rss_after_bytes"] >= data["memory"]["peak_rss_before_bytes"] > 0
    assert data["host"]["backend"] == report.backend and data["host"]["python"]
    assert report.overlay_png is not None and report.overlay_png.read_bytes()[:8] == PNG_MAGIC
    md = report.report_md.read_text()
    assert "## Stages" in md and "| inference |" in md and "Dice" in md and "GFLOP/s" in md
    assert report.mask.exists()


def test_profile_refuses_labels_off_the_scan_grid(tiny: tuple[Path, Path, Path], tmp_path: Path) -> None:
    bundle, scan, _ = tiny
    _, other = make_phantom(4, PhantomConfig(shape=(40, 40, 20), spacing_mm=(8.0, 8.0, 10.0)))
    wrong = write_nifti(other, tmp_path / "wrong.nii.gz")
    with pytest.raises(InputError):
        profile_bundle(bundle, scan, teacher_predictions=wrong, repeats=1, warmup=0, out_dir=tmp_path / "p")
    assert not (tmp_path / "p" / "report.json").exists()


def test_cli_profile(tiny: tuple[Path, Path, Path], tmp_path: Path) -> None:
    from edgemed.cli._profile import profile

    bundle, scan, seg = tiny
    args = [str(bundle), "--scan", str(scan), "--teacher-predictions", str(seg), "--repeats", "1", "--warmup", "0",
            "--threads", "1", "--out", str(tmp_path / "c")]
    res = CliRunner().invoke(profile, args)
    assert res.exit_code == 0, res.output
    assert "Dice" in res.output and "GFLOP/s" in res.output and "next:" in res.output
    assert (tmp_path / "c" / "report.md").exists() and (tmp_path / "c" / "overlay.png").exists()
    res = CliRunner().invoke(profile, [*args[:-1], str(tmp_path / "j"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["accuracy"][0]["organ"] == "liver"


def test_cli_profile_errors_are_edgemed_errors(tiny: tuple[Path, Path, Path], tmp_path: Path) -> None:
    import shutil

    from edgemed.cli._profile import profile

    bundle, scan, _ = tiny
    res = CliRunner().invoke(profile, [str(bundle), "--scan", str(tmp_path / "missing.nii.gz")])
    assert isinstance(res.exception, InputError) and "missing.nii.gz" in str(res.exception)
    altered = shutil.copytree(bundle, tmp_path / "altered.edgemed")
    model = altered / "model.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0xFF
    model.write_bytes(bytes(data))
    res = CliRunner().invoke(profile, [str(altered), "--scan", str(scan), "--out", str(tmp_path / "x")])
    assert isinstance(res.exception, ArtifactError) and "altered" in str(res.exception)


def test_profiles_import_without_torch_or_heavy_libraries() -> None:
    result = run_without_torch(
        "import edgemed.profiles, edgemed.measure\n"
        "heavy = [m for m in ('torch', 'matplotlib', 'onnx', 'scipy') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("backend", ["ort", "openvino"])
def test_conv_peak_probe_runs_int8_and_fp32(backend: str) -> None:
    from edgemed.measure import peak_conv_gops

    pytest.importorskip("openvino" if backend == "openvino" else "onnxruntime")
    for precision in ("int8", "fp32"):
        gops = peak_conv_gops(backend, precision, channels=32, size=16, repeats=1)
        assert 0 < gops < 1e6
    with pytest.raises(ValueError, match="precision"):
        peak_conv_gops(backend, "int4", channels=8, size=8)


def test_cli_profile_predicts_for_a_target_not_at_hand(tiny: tuple[Path, Path, Path], tmp_path: Path) -> None:
    from edgemed.cli._profile import profile
    from edgemed.measure import Calibration

    bundle, scan, _ = tiny
    res = CliRunner().invoke(profile, [str(bundle), "--scan", str(scan), "--target", "jetson-orin-nano-8gb",
                                       "--precision", "fp16"])
    assert res.exit_code == 0, res.output
    assert res.output.startswith("PREDICTED (not measured)") and "uncalibrated default" in res.output
    cal = tmp_path / "cal.json"
    cal.write_text(json.dumps(Calibration("trt", "fp16", 0.5, 0.5, 1.0, note="test calibration").to_json()))
    res = CliRunner().invoke(profile, [str(bundle), "--scan", str(scan), "--target", "jetson-agx-orin-64gb",
                                       "--calibration", str(cal), "--json"])
    out = json.loads(res.output)
    assert out["label"] == "predicted" and out["precision"] == "fp32" and out["volume_inference_ms"] > 0
    assert out["per_batch"]["calibration"]["note"] == "test calibration"
    res = CliRunner().invoke(profile, [str(bundle), "--scan", str(scan), "--target", "orin-nano"])
    assert isinstance(res.exception, ConfigError) and "jetson-orin-nano-8gb" in str(res.exception)


def test_cli_profiles_lists_shows_and_measures_the_host() -> None:
    from edgemed.cli._profiles import profiles

    res = CliRunner().invoke(profiles, [])
    assert res.exit_code == 0 and "jetson-orin-nano-8gb" in res.output and "h200" in res.output
    shown = json.loads(CliRunner().invoke(profiles, ["--show", "jetson-agx-orin-64gb"]).output)
    assert shown["dla_cores"] == 2 and "developer.nvidia.com" in shown["sources"]["peak_tops"]
    res = CliRunner().invoke(profiles, ["--host", "--json"])
    host = [p for p in json.loads(res.output) if p["id"] == "host"][0]
    assert host["peak_tops"]["fp32"] > 0 and host["memory_bandwidth_gbs"] > 0
    assert host["sources"]["peak_tops.fp32"].startswith("measured")
