"""Target profiles (built-in, TOML, host) and roofline latency prediction with calibration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edgemed.errors import ConfigError
from edgemed.measure import Calibration, fit_calibration, graph_cost, predict_latency
from edgemed.profiles import BUILTIN_TARGETS, Precision, TargetProfile, get_profile, list_profiles, load_profiles_toml


def test_builtin_profiles_cover_the_asked_targets_with_sources() -> None:
    ids = set(BUILTIN_TARGETS)
    assert {"jetson-orin-nano-8gb", "jetson-orin-nx-16gb", "jetson-agx-orin-64gb", "jetson-xavier-nx", "rtx-4090",
            "a100", "h100", "h200", "x86-avx2-8c", "x86-avx512-vnni-16c", "arm-cortex-a78ae-12c"} <= ids
    for p in BUILTIN_TARGETS.values():
        assert p.sources.get("peak_tops") and p.sources.get("memory_bandwidth_gbs"), p.id
        assert all(prec in p.peak_tops for prec in p.precisions)
        if p.accelerator.value == "gpu":
            assert p.compute_capability is not None and p.preferred_backend == "trt"
    orin = get_profile("jetson-orin-nano-8gb")
    assert orin.peak_ops(Precision.INT8) == pytest.approx(2 * orin.peak_ops("fp16"))  # tensor cores: INT8 = 2x FP16
    assert get_profile("jetson-agx-orin-64gb").dla_cores == 2 and orin.dla_cores == 0


def test_unknown_profile_suggests_close_ids() -> None:
    with pytest.raises(ConfigError, match="jetson-orin-nano-8gb"):
        get_profile("orin-nano")


def test_user_profiles_from_toml_override_and_validate(tmp_path: Path) -> None:
    good = tmp_path / "targets.toml"
    good.write_text('[targets.cart-orin]\nname = "cart"\naccelerator = "gpu"\npeak_tops = { fp16 = 12.0, int8 = 24.0 }\n'
                    'memory_bandwidth_gbs = 102.4\nmemory_mib = 15000\nprecisions = ["fp16", "int8"]\n'
                    'compute_capability = [8, 7]\npreferred_backend = "trt"\n'
                    'sources = { peak_tops = "trtexec, 2026-11" }\n')
    loaded = load_profiles_toml(good)["cart-orin"]
    assert loaded.compute_capability == (8, 7) and loaded.peak_ops("int8") == 24e12
    assert "cart-orin" in {p.id for p in list_profiles(good)}
    bad = tmp_path / "bad.toml"
    bad.write_text('[targets.x]\nname = "x"\naccelerator = "gpu"\npeak_tops = { fp16 = 1.0 }\n'
                   'memory_bandwidth_gbs = 1\nmemory_mib = 1\nprecisions = ["fp16", "int8"]\n')
    with pytest.raises(ConfigError, match="no peak_tops for int8"):
        load_profiles_toml(bad)
    (tmp_path / "typo.toml").write_text('[targets.y]\nnme = "y"\n')
    with pytest.raises(ConfigError, match="incomplete or has unknown keys"):
        load_profiles_toml(tmp_path / "typo.toml")
    with pytest.raises(ConfigError, match="does not exist"):
        load_profiles_toml(tmp_path / "missing.toml")


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import onnx
    from onnx import TensorProto, helper

    rng = np.random.default_rng(0)
    w1 = helper.make_tensor("w1", TensorProto.FLOAT, [16, 3, 3, 3], rng.random(16 * 27).astype(np.float32))
    w2 = helper.make_tensor("w2", TensorProto.FLOAT, [2, 16, 1, 1], rng.random(32).astype(np.float32))
    nodes = [helper.make_node("Conv", ["image", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["b"]),
             helper.make_node("Conv", ["b", "w2"], ["logits"])]
    graph = helper.make_graph(nodes, "tiny", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                            ["batch", 3, "h", "w"])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 2, "h", "w"])],
                              [w1, w2])
    path = tmp_path_factory.mktemp("pred") / "tiny.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_graph_cost_counts_flops_and_bytes_per_node(tiny_onnx: Path) -> None:
    cost = graph_cost(tiny_onnx, {"image": (2, 3, 32, 32)})
    assert cost.op_types == ("Conv", "Relu", "Conv")
    assert cost.flops[0] == 2 * 2 * 16 * 32 * 32 * 27 and cost.flops[1] == 2 * 16 * 32 * 32
    assert cost.bytes[0] == 4 * (2 * 3 * 32 * 32 + 16 * 27 + 2 * 16 * 32 * 32)
    half = graph_cost(tiny_onnx, {"image": (2, 3, 32, 32)}, "int8")
    np.testing.assert_allclose(half.bytes * 4, cost.bytes)


def test_prediction_is_a_labelled_roofline_and_scales_with_the_target(tiny_onnx: Path) -> None:
    cost = graph_cost(tiny_onnx, {"image": (8, 3, 256, 256)}, "fp16")
    nano, agx = get_profile("jetson-orin-nano-8gb"), get_profile("jetson-agx-orin-64gb")
    p_nano, p_agx = predict_latency(cost, nano, "fp16"), predict_latency(cost, agx, "fp16")
    assert p_nano.label == "predicted" and "uncalibrated" in p_nano.calibration.note
    assert p_agx.latency_ms < p_nano.latency_ms
    assert p_nano.latency_ms == pytest.approx(p_nano.compute_ms + p_nano.memory_ms + p_nano.overhead_ms)
    assert sum(p_nano.bound_by.values()) == cost.nodes
    with pytest.raises(ConfigError, match="does not run tf32"):
        predict_latency(cost, nano, "tf32")


def test_calibration_recovers_known_efficiencies(tiny_onnx: Path) -> None:
    # Synthetic "measurements" made by the model itself with known parameters: the fit must find them.
    target = TargetProfile(id="t", name="t", accelerator="cpu", peak_tops={"fp32": 0.5}, memory_bandwidth_gbs=20.0,
                           memory_mib=1024, precisions=frozenset({"fp32"}))
    truth = Calibration("ort", "fp32", 0.4, 0.3, 30.0)
    runs = []
    for b, s in [(1, 32), (4, 64), (8, 128), (16, 256), (2, 512)]:
        cost = graph_cost(tiny_onnx, {"image": (b, 3, s, s)})
        runs.append((f"{b}x{s}", cost, predict_latency(cost, target, "fp32", truth).latency_ms))
    fitted = fit_calibration(runs, target, "fp32", "ort")
    for _, cost, ms in runs:
        assert predict_latency(cost, target, "fp32", fitted).latency_ms == pytest.approx(ms, rel=0.05)
    assert len(fitted.fitted_on) == 5 and "fitted on 5" in fitted.note
    assert Calibration.from_json(fitted.to_json()) == fitted
    with pytest.raises(ConfigError, match="no measured runs"):
        fit_calibration([], target, "fp32", "ort")


def test_shipped_calibrations_load_by_name_and_predict() -> None:
    from edgemed.measure import load_calibration, shipped_calibrations

    names = shipped_calibrations()
    assert {"host_ort_fp32", "host_ort_int8", "host_openvino_fp32", "host_openvino_int8"} <= set(names)
    cal = load_calibration("host_ort_int8")
    assert cal.backend == "ort" and cal.precision == "int8" and cal.fitted_on
    assert 0 < cal.compute_efficiency <= 1.5
    with pytest.raises(ConfigError, match="shipped calibrations: host_"):
        load_calibration("host_tpu_int4")
