"""INT8 quantization of bundles: real NNCF and ONNX Runtime quantizers, Dice control, fastest-wins choice."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from _phantom_pairs import write_phantom_pairs

from edgemed.artifacts import PreprocessSpec
from edgemed.compress import DistillConfig, NncfInt8Config, OrtInt8Config, distill, quantize
from edgemed.errors import ConfigError, InputError
from edgemed.phantom import PhantomConfig, make_phantom

SMALL = PhantomConfig(shape=(48, 40, 24), spacing_mm=(8.0, 8.0, 10.0))


@pytest.fixture(scope="module")
def fp32_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], list[Path]]:
    from edgemed.export import to_onnx

    root = tmp_path_factory.mktemp("quant")
    scans, segs = write_phantom_pairs(root, range(2), SMALL)
    cfg = DistillConfig(organs=("liver",), student="unet2d", student_kwargs={"widths": [8, 16, 32]}, epochs=6,
                        lr=1e-2, threads=1, ema_decay=None,
                        preprocess=PreprocessSpec(spacing_mm=(8.0, 8.0), context_slices=1, pad_multiple=4))
    ckpt = distill(scans, cfg, root / "student", teacher_predictions=segs, progress=False)
    return to_onnx(ckpt, root / "fp32").path, scans, segs


def _ops(path: Path) -> set[str]:
    return {n.op_type for n in onnx.load(str(path)).graph.node}


@pytest.mark.parametrize("config", [OrtInt8Config(calibration_slices=16, max_dice_drop=0.2),
                                    NncfInt8Config(calibration_slices=16, max_dice_drop=0.2)],
                         ids=["ort", "nncf"])
def test_quantize_measures_and_keeps_what_wins(fp32_bundle: tuple[Path, list[Path], list[Path]], tmp_path: Path,
                                               config: object) -> None:
    from edgemed import runtime
    from edgemed.runtime import OnnxBundle

    src, scans, segs = fp32_bundle
    result = quantize(src, scans[:1], config, tmp_path / "q", validation_scans=scans[1:], references=segs[1:],
                      timing_repeats=3)  # type: ignore[arg-type]
    out = OnnxBundle.load(tmp_path / "q")
    assert out.precision == result.chosen_precision and out.metadata["preferred_backend"] == result.chosen_backend
    record = out.metadata["quantization"]
    assert record["calibration"]["slices"] == 16 and record["calibration"]["organ_slices"] >= 8
    assert out.meta.qc is not None and out.meta.qc == OnnxBundle.load(src).meta.qc  # the runtime QC's reference travels
    assert set(record["latency_ms"]) == {"fp32_ort", f"fp32_{config.backend}", f"int8_{config.backend}"}  # type: ignore[attr-defined]
    liver = record["dice"]["organs"]["liver"]
    assert 0.0 <= liver["int8_vs_reference"] <= 1.0 and liver["drop"] == pytest.approx(
        liver["fp32_vs_reference"] - liver["int8_vs_reference"], abs=1e-3)
    if result.chosen_precision == "int8":
        assert "QuantizeLinear" in _ops(out.model_path)
        assert "faster" in result.reason
    else:  # kept FP32, and says why
        assert "QuantizeLinear" not in _ops(out.model_path) and result.reason.startswith("INT8 kept out")
        assert out.model_path.read_bytes() == OnnxBundle.load(src).model_path.read_bytes()
    assert out.manifest.parent == OnnxBundle.load(src).manifest.digest
    ct, _ = make_phantom(9, SMALL)
    with runtime.load(out.path) as seg:  # auto: the preferred backend recorded by quantize
        assert seg.backend == result.chosen_backend
        assert seg.segment(ct).array.shape == ct.shape


def test_keep_if_slower_keeps_int8_within_the_budget_whatever_the_timing(
        fp32_bundle: tuple[Path, list[Path], list[Path]], tmp_path: Path) -> None:
    """--keep-if-slower (require_faster=False): which model is written depends on Dice only, never on one
    timing here (edgemed compress relies on it: its candidate set must be the same run after run)."""
    import json

    from click.testing import CliRunner

    from edgemed.cli import _cli
    from edgemed.runtime import OnnxBundle

    src, scans, segs = fp32_bundle
    res = CliRunner().invoke(_cli, ["quantize", str(src), "--scans", str(scans[0]), "--out", str(tmp_path / "q"),
                                    "--method", "ort", "--max-dice-drop", "0.2", "--calibration-slices", "16",
                                    "--keep-if-slower", "--json"])
    assert res.exit_code == 0, res.output
    record = json.loads(res.stdout)
    out = OnnxBundle.load(tmp_path / "q")
    assert record["chosen_precision"] == out.precision == "int8" and "QuantizeLinear" in _ops(out.model_path)
    lat = record["latency_ms"]
    if lat["int8_ort"] >= 0.95 * lat["fp32_ort"]:  # the timing alone would have kept FP32
        assert "kept although not faster here" in record["reason"]
    # over the Dice budget, FP32 is still written: the flag lifts the speed rule only
    assert record["dice"]["worst_drop"] > 0  # INT8 moved some voxels, so a zero budget refuses it
    strict = quantize(src, scans[:1], OrtInt8Config(calibration_slices=16, max_dice_drop=0.0), tmp_path / "s",
                      timing_repeats=1, require_faster=False)
    assert strict.chosen_precision == "fp32" and "Dice drop" in strict.reason


def test_both_quantizers_write_int8_graphs(fp32_bundle: tuple[Path, list[Path], list[Path]], tmp_path: Path) -> None:
    from edgemed.compress._quantize import _quantize_nncf, _quantize_ort
    from edgemed.runtime import OnnxBundle

    src = OnnxBundle.load(fp32_bundle[0])
    calib = [np.random.default_rng(i).random((1, 3, 48, 40), dtype=np.float32) for i in range(8)]
    for fn, cfg in [(_quantize_ort, OrtInt8Config(calibrate_method="percentile")), (_quantize_nncf, NncfInt8Config())]:
        dst = tmp_path / f"{fn.__name__}.onnx"
        fn(src.model_path, dst, calib, src.inputs[0].name, cfg)  # type: ignore[operator]
        ops = _ops(dst)
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops, (fn.__name__, ops)


def test_bad_quantize_input_is_refused(fp32_bundle: tuple[Path, list[Path], list[Path]], tmp_path: Path) -> None:
    src, scans, _ = fp32_bundle
    with pytest.raises(ConfigError, match="calibration_slices=4"):
        OrtInt8Config(calibration_slices=4)
    with pytest.raises(ConfigError, match="calibrate_method"):
        OrtInt8Config(calibrate_method="kl")
    with pytest.raises(ConfigError, match="no calibration scans"):
        quantize(src, [], NncfInt8Config(), tmp_path / "x")
    with pytest.raises(ConfigError, match="reference label maps"):
        quantize(src, scans, NncfInt8Config(), tmp_path / "x", references=scans[:1])
    air = make_phantom(1, SMALL)[0]
    air = air.with_array(np.full(air.shape, -1000, np.int16))
    with pytest.raises(InputError, match="finds its organ in none"):
        quantize(src, [air], NncfInt8Config(calibration_slices=8), tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("importance", ["magnitude", "bn_scale", "taylor"])
def test_prune_halves_channels_and_reloads_without_pickle(fp32_bundle: tuple[Path, list[Path], list[Path]],
                                                         tmp_path: Path, importance: str) -> None:
    import torch

    from edgemed.artifacts import StudentCheckpoint
    from edgemed.compress import PruneConfig, prune
    from edgemed.models import load_student

    student = StudentCheckpoint.load(fp32_bundle[0].parent / "student")
    pruned = prune(student, PruneConfig(ratio=0.5, importance=importance), tmp_path / "p")
    before, after = pruned.metadata["pruning"]["parameters"]
    assert after < 0.4 * before  # ~a quarter: both sides of each conv shrink
    assert pruned.architecture["pruned"] is True
    assert sorted(p.name for p in pruned.path.iterdir()) == ["architecture.json", "history.json", "manifest.json",
                                                            "weights.safetensors"]
    net = load_student(pruned)
    assert sum(p.numel() for p in net.parameters()) == after
    assert net(torch.zeros(1, 3, 16, 16)).shape == (1, 2, 16, 16)


def test_pruned_student_fine_tunes_from_its_parent(fp32_bundle: tuple[Path, list[Path], list[Path]],
                                                   tmp_path: Path) -> None:
    from edgemed.artifacts import StudentCheckpoint
    from edgemed.compress import PruneConfig, prune
    from edgemed.export import to_onnx
    from edgemed.models.teachers import StudentTeacher

    _, scans, _ = fp32_bundle
    parent_dir = fp32_bundle[0].parent / "student"
    parent = StudentCheckpoint.load(parent_dir)
    pruned = prune(parent, PruneConfig(ratio=0.5), tmp_path / "p")
    cfg = DistillConfig(organs=("liver",), epochs=2, lr=1e-3, threads=1, preprocess=parent.preprocess)
    tuned = distill(scans, cfg, tmp_path / "kd", teacher=StudentTeacher(parent_dir), init=pruned, progress=False)
    assert tuned.architecture["pruned"] is True
    assert tuned.metadata["init"]["digest"] == pruned.manifest.digest
    assert tuned.metadata["teacher"]["kind"] == "edgemed-student"
    assert tuned.metadata["training"]["parameters"] == pruned.metadata["pruning"]["parameters"][1]
    bundle = to_onnx(tuned, tmp_path / "b")  # parity-checked export of the pruned structure
    assert bundle.parity["max_abs_logit_diff"] < 1e-3
    with pytest.raises(ConfigError, match="other preprocessing"):
        distill(scans, DistillConfig(organs=("liver",), epochs=1), tmp_path / "x", teacher=StudentTeacher(parent_dir),
                init=pruned, progress=False)


def test_nncf_accuracy_control_returns_harmful_layers_to_fp32(fp32_bundle: tuple[Path, list[Path], list[Path]],
                                                              tmp_path: Path) -> None:
    # A zero budget: any INT8 error triggers NNCF's accuracy control, which must report the layers
    # it kept in FP32 and leave a valid INT8 graph (or FP32 kept, with the reason).
    from edgemed.runtime import OnnxBundle

    src, scans, _ = fp32_bundle
    cfg = NncfInt8Config(calibration_slices=16, max_dice_drop=0.0, accuracy_control=True)
    result = quantize(src, scans[:1], cfg, tmp_path / "ac", validation_scans=scans[1:], timing_repeats=2)
    record = OnnxBundle.load(tmp_path / "ac").metadata["quantization"]["dice"]
    if "first_attempt_worst_drop" in record:  # INT8 changed some masks: accuracy control ran
        assert record["first_attempt_worst_drop"] > 0.0
        assert isinstance(record["kept_in_fp32_by_accuracy_control"], list)
    assert result.chosen_precision in ("int8", "fp32") and result.reason


def test_qat_trains_fake_quantizers_from_the_fp32_student_and_exports_qdq(
        fp32_bundle: tuple[Path, list[Path], list[Path]], tmp_path: Path) -> None:
    import torch

    from edgemed.artifacts import StudentCheckpoint
    from edgemed.compress import NncfQatConfig
    from edgemed.compress._quantize import _quantize_nncf_qat, fold_batchnorm_
    from edgemed.models import load_student
    from edgemed.runtime import OnnxBundle
    from edgemed.runtime.backends import open_session

    src_dir, scans, segs = fp32_bundle
    src = OnnxBundle.load(src_dir)
    student_dir = src_dir.parent / "student"
    # BatchNorm folding is exact: the folded network computes the same logits.
    net = load_student(StudentCheckpoint.load(student_dir)).eval()
    x = torch.rand(2, 3, 48, 40)
    with torch.no_grad():
        before = net(x)
        assert fold_batchnorm_(net) > 0
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
        torch.testing.assert_close(net(x), before, atol=1e-4, rtol=1e-4)
    # The handler: PTQ-initialised fake quantizers, trained, exported as a QDQ graph that both runtimes run.
    calib = [np.random.default_rng(i).random((1, 3, 48, 40), dtype=np.float32) for i in range(16)]
    dst = tmp_path / "qat.onnx"
    _quantize_nncf_qat(src.model_path, dst, calib, src.inputs[0].name,
                       NncfQatConfig(student=student_dir, calibration_slices=16, epochs=2))
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= _ops(dst)
    for backend in ("ort", "openvino"):
        with open_session(backend, dst) as session:
            out = session.run({src.inputs[0].name: calib[0]})
            assert next(iter(out.values())).shape == (1, 2, 48, 40)
    # Through quantize(): measured and decided like PTQ, and recorded as QAT.
    result = quantize(src_dir, scans[:1], NncfQatConfig(student=student_dir, calibration_slices=16, epochs=1,
                                                         max_dice_drop=0.2),
                      tmp_path / "q", validation_scans=scans[1:], references=segs[1:], timing_repeats=2)
    record = OnnxBundle.load(tmp_path / "q").metadata["quantization"]
    assert record["calibration"]["method"] == "NncfQatConfig" and record["calibration"]["config"]["epochs"] == 1
    assert set(result.latency_ms) == {"fp32_ort", "fp32_openvino", "int8_openvino"} and result.reason


def test_qat_refuses_a_student_the_bundle_was_not_exported_from(fp32_bundle: tuple[Path, list[Path], list[Path]],
                                                                tmp_path: Path) -> None:
    from edgemed.compress import NncfQatConfig, PruneConfig, prune

    src_dir, scans, _ = fp32_bundle
    other = prune(src_dir.parent / "student", PruneConfig(ratio=0.25), tmp_path / "other")
    with pytest.raises(InputError, match="not exported from"):
        quantize(src_dir, scans[:1], NncfQatConfig(student=other.path), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_calibration_scans_of_different_sizes_are_accepted(fp32_bundle: tuple[Path, list[Path], list[Path]],
                                                           tmp_path: Path) -> None:
    """Two scans whose body crops differ in size used to crash the timing batch (np.concatenate)."""
    from edgemed.io import write_nifti

    src, scans, _ = fp32_bundle
    wide = write_nifti(make_phantom(5, PhantomConfig(shape=(60, 44, 24), spacing_mm=(8.0, 8.0, 10.0)))[0],
                       tmp_path / "wide.nii.gz")
    result = quantize(src, [scans[0], wide], OrtInt8Config(calibration_slices=32, max_dice_drop=0.2),
                      tmp_path / "q", timing_repeats=2)
    assert result.calibration["scans"] == 2 and result.calibration["slices"] > 16
    assert result.latency_ms["int8_ort"] > 0
