"""TensorRT build, everything that needs no GPU: config, shape profiles, pre-build refusals, inspector
parsing, compatibility messages, the engine bundle's manifest, `edgemed build` (--print-config, and
the message when TensorRT is missing)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from edgemed.artifacts import StudentCheckpoint, write_artifact
from edgemed.errors import (ArtifactError, BackendError, CompatibilityError, ConfigError, EdgemedWarning,
                            MissingDependencyError)
from edgemed.export import (EngineBundle, OnnxBundle, ShapeProfile, TrtBuildConfig, build_engine,
                            check_engine_compatible, derive_shape_profiles, parse_layer_precisions, to_onnx,
                            write_engine_bundle)
from edgemed.export._trt import check_build_host, engine_metadata, precision_counts, timing_cache_sha256
from edgemed.export._trt_config import check_build_request, count_quantize_nodes
from edgemed.profiles import Accelerator, Precision, TargetProfile, get_profile
from edgemed.runtime import BUNDLE_KIND
from edgemed.artifacts import open_bundle

ORIN_NX = get_profile("jetson-orin-nx-16gb")
ORIN_NANO = get_profile("jetson-orin-nano-8gb")
RTX = get_profile("rtx-4090")
ORIN_HOST = {"tensorrt_version": "10.3.0.30", "gpu_name": "Orin", "compute_capability": [8, 7], "cuda_runtime": "12.6",
             "cuda_driver": "12.6", "dla_cores": 2}


@pytest.fixture(scope="module")
def bundle(export_student: StudentCheckpoint, tmp_path_factory: pytest.TempPathFactory) -> OnnxBundle:
    return to_onnx(export_student, tmp_path_factory.mktemp("trt") / "liver.edgemed")


def _variant(bundle: OnnxBundle, out: Path, *, model: bytes | None = None, **meta: Any) -> OnnxBundle:
    """A copy of `bundle` with some metadata (or the model file) replaced."""
    payload = {"model.onnx": model if model is not None else bundle.model_path.read_bytes()}
    write_artifact(out, kind=BUNDLE_KIND, schema_version=1, payload=payload, metadata={**bundle.metadata, **meta},
                   parent=bundle.manifest.parent)
    return OnnxBundle.load(out)


def _qdq_model() -> bytes:
    import onnx
    from onnx import TensorProto, helper

    nodes = [helper.make_node("QuantizeLinear", ["image", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["logits"])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("image", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, None)],
                              [helper.make_tensor("s", TensorProto.FLOAT, [], [0.1]),
                               helper.make_tensor("z", TensorProto.INT8, [], [0])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


# ---- config -------------------------------------------------------------------------------------------------

def test_config_defaults_coerce_and_serialise(tmp_path: Path) -> None:
    config = TrtBuildConfig(precision="int8", batch=[1, 2, 4], timing_cache=str(tmp_path / "t.cache"))
    assert config.precision is Precision.INT8 and config.batch == (1, 2, 4)
    assert config.timing_cache == tmp_path / "t.cache"
    assert TrtBuildConfig().precision is Precision.FP16 and TrtBuildConfig().fallback == "none"
    as_json = config.to_json()
    assert as_json["precision"] == "int8" and as_json["batch"] == [1, 2, 4] and json.dumps(as_json)


@pytest.mark.parametrize(("kwargs", "words"), [
    ({"precision": "bf16"}, "fp32, fp16 or int8"),
    ({"precision": "tf32"}, "TF32"),
    ({"workspace_mib": 0}, "workspace_mib"),
    ({"batch": (8, 1, 16)}, "min <= opt <= max"),
    ({"size_px": (16, 32)}, "three integers"),
    ({"dla_core": -1}, "DLA core index"),
    ({"dla_core": 0, "precision": "fp32"}, "DLA runs fp16 or int8"),
    ({"hardware_compatibility": "turing"}, "'none' or 'ampere_plus'"),
    ({"hardware_compatibility": "ampere_plus", "dla_core": 0}, "DLA engine is tied"),
    ({"fallback": "fp16"}, "'none' or 'fp32'"),
    ({"fallback": "fp32", "precision": "fp32"}, "only applies to fp16 or int8"),
])
def test_config_refuses_bad_values(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        TrtBuildConfig(**kwargs)


# ---- shape profiles -----------------------------------------------------------------------------------------

def test_shape_profiles_cover_200_to_500_mm_at_the_student_spacing(bundle: OnnxBundle) -> None:
    (name, profile), = derive_shape_profiles(bundle, TrtBuildConfig()).items()
    # 8 mm, pad 4: 200 mm → floor(25/4)*4 = 24 px, 350 mm → ceil(43.75/4)*4 = 44, 500 mm → ceil(62.5/4)*4 = 64.
    assert name == "image" and profile == ShapeProfile("image", (1, 3, 24, 24), (8, 3, 44, 44), (16, 3, 64, 64))
    assert profile.min[2] * 8.0 <= 200.0 and profile.max[2] * 8.0 >= 500.0


def test_shape_profiles_at_a_clinical_spacing(bundle: OnnxBundle, tmp_path: Path) -> None:
    pre = {**bundle.metadata["preprocess"], "spacing_mm": [1.5, 1.5], "pad_multiple": 16}
    fine = _variant(bundle, tmp_path / "fine", preprocess=pre)
    profile = derive_shape_profiles(fine, TrtBuildConfig())["image"]
    assert (profile.min[2], profile.opt[2], profile.max[2]) == (128, 240, 336)  # the numbers the docstring gives
    assert all(v % 16 == 0 for v in (*profile.min[2:], *profile.opt[2:], *profile.max[2:]))


def test_shape_overrides_and_their_checks(bundle: OnnxBundle, tmp_path: Path) -> None:
    profile = derive_shape_profiles(bundle, TrtBuildConfig(batch=(2, 4, 8), size_px=(16, 32, 48)))["image"]
    assert (profile.min, profile.opt, profile.max) == ((2, 3, 16, 16), (4, 3, 32, 32), (8, 3, 48, 48))
    with pytest.raises(ConfigError, match="multiple of the bundle's pad_multiple 4"):
        derive_shape_profiles(bundle, TrtBuildConfig(size_px=(16, 30, 48)))
    fixed = _variant(bundle, tmp_path / "b1", inputs=[{**bundle.metadata["inputs"][0],
                                                       "shape": [1, 3, "height", "width"]}])
    profile = derive_shape_profiles(fixed, TrtBuildConfig())["image"]
    assert profile.min[0] == profile.opt[0] == profile.max[0] == 1
    with pytest.raises(ConfigError, match="fixed batch of 1"):
        derive_shape_profiles(fixed, TrtBuildConfig(batch=(1, 8, 16)))


def test_dla_gets_one_fixed_shape(bundle: OnnxBundle) -> None:
    profile = derive_shape_profiles(bundle, TrtBuildConfig(dla_core=0))["image"]
    assert profile.min == profile.opt == profile.max == (8, 3, 64, 64)


# ---- refusals before any GPU work ---------------------------------------------------------------------------

def test_int8_needs_a_qdq_onnx(bundle: OnnxBundle, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"no QuantizeLinear nodes.*edgemed quantize"):
        check_build_request(bundle, RTX, TrtBuildConfig(precision="int8"))
    qdq = _variant(bundle, tmp_path / "qdq", model=_qdq_model(), precision="int8")
    check_build_request(qdq, RTX, TrtBuildConfig(precision="int8"))  # accepted
    assert count_quantize_nodes(qdq.model_path) == 1 and count_quantize_nodes(bundle.model_path) == 0
    monkeypatch.setitem(sys.modules, "onnx", None)  # device without onnx: the byte scan agrees
    assert count_quantize_nodes(qdq.model_path) == 1 and count_quantize_nodes(bundle.model_path) == 0


def test_dla_core_must_exist_on_the_target(bundle: OnnxBundle) -> None:
    with pytest.raises(ConfigError, match="jetson-orin-nano-8gb has no DLA"):
        check_build_request(bundle, ORIN_NANO, TrtBuildConfig(dla_core=0))
    with pytest.raises(ConfigError, match=r"has 2 DLA core\(s\) \(indices 0..1\)"):
        check_build_request(bundle, ORIN_NX, TrtBuildConfig(dla_core=2))
    check_build_request(bundle, ORIN_NX, TrtBuildConfig(dla_core=1))


def test_target_checks(bundle: OnnxBundle) -> None:
    with pytest.raises(ConfigError, match="is a CPU"):
        check_build_request(bundle, get_profile("x86-avx2-8c"), TrtBuildConfig())
    old = TargetProfile(id="old-gpu", name="old", accelerator=Accelerator.GPU, peak_tops={Precision.FP32: 1.0},
                        memory_bandwidth_gbs=100.0, memory_mib=4096, precisions=frozenset({Precision.FP32}),
                        compute_capability=(7, 5), tensorrt="10.x")
    with pytest.raises(ConfigError, match="does not run fp16"):
        check_build_request(bundle, old, TrtBuildConfig())
    with pytest.raises(ConfigError, match="Ampere-or-newer target"):
        check_build_request(bundle, old, TrtBuildConfig(precision="fp32", hardware_compatibility="ampere_plus"))
    with pytest.raises(ConfigError, match="Jetson"):
        check_build_request(bundle, ORIN_NX, TrtBuildConfig(hardware_compatibility="ampere_plus"))
    with pytest.raises(ConfigError, match="TensorRT >= 8.6"):
        check_build_request(bundle, get_profile("jetson-xavier-nx"), TrtBuildConfig(version_compatible=True))
    check_build_request(bundle, RTX, TrtBuildConfig(hardware_compatibility="ampere_plus", version_compatible=True))


def test_build_host_must_be_the_target_gpu() -> None:
    rtx_host = {**ORIN_HOST, "gpu_name": "NVIDIA GeForce RTX 3090", "compute_capability": [8, 6], "dla_cores": 0}
    with pytest.raises(CompatibilityError, match=r"compute capability 8.6\) is not jetson-orin-nx-16gb's "
                                                  r"\(compute capability 8.7\).*edgemed build b.edgemed --target "
                                                  r"jetson-orin-nx-16gb --precision fp16"):
        check_build_host(ORIN_NX, TrtBuildConfig(), rtx_host, "b.edgemed")
    with pytest.raises(CompatibilityError, match="--hardware-compatible"):
        check_build_host(RTX, TrtBuildConfig(), {**rtx_host, "tensorrt_version": "10.7.0"})
    ampere_plus = TrtBuildConfig(hardware_compatibility="ampere_plus")
    check_build_host(RTX, ampere_plus, {**rtx_host, "tensorrt_version": "10.7"})
    with pytest.raises(CompatibilityError, match="DLA core 1 does not exist here"):
        check_build_host(ORIN_NX, TrtBuildConfig(dla_core=1), {**ORIN_HOST, "dla_cores": 1})
    with pytest.warns(EdgemedWarning, match="assumes TensorRT 10.3; this host has 10.7.0"):
        check_build_host(ORIN_NX, TrtBuildConfig(), {**ORIN_HOST, "tensorrt_version": "10.7.0"})


# ---- inspector JSON ----------------------------------------------------------------------------------------

INSPECTOR = json.dumps({"Layers": [
    {"Name": "Reformatting CopyNode for Input Tensor 0 to /enc0/conv/Conv + /enc0/act/Relu", "LayerType": "Reformat",
     "Inputs": [{"Name": "image", "Location": "Device", "Dimensions": [8, 3, 44, 44],
                 "Format/Datatype": "Row major linear FP32"}],
     "Outputs": [{"Name": "Reformatted Input Tensor 0", "Location": "Device", "Dimensions": [8, 3, 44, 44],
                  "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}],
     "ParameterType": "Reformat", "Origin": "REFORMAT", "TacticValue": "0x00000000000003ea", "StreamId": 0},
    {"Name": "/enc0/conv/Conv + /enc0/act/Relu", "LayerType": "CaskConvolution",
     "Inputs": [{"Name": "Reformatted Input Tensor 0", "Dimensions": [8, 3, 44, 44],
                 "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}],
     "Outputs": [{"Name": "/enc0/act/Relu_output_0", "Dimensions": [8, 8, 44, 44],
                  "Format/Datatype": "Channel major FP16 format where channel % 8 == 0"}],
     "ParameterType": "Convolution", "Kernel": [3, 3], "Weights": {"Type": "Half", "Count": 216},
     "Bias": {"Type": "Half", "Count": 8},
     "TacticName": "sm87_xmma_fprop_implicit_gemm_f16f16_f16f16_f16_nhwckrsc_nhwc_tilesize32x32x64_stage4",
     "TacticValue": "0x1f2c"},
    {"Name": "/enc1/conv/Conv", "LayerType": "CaskConvolution",
     "Inputs": [{"Name": "q0", "Dimensions": [16, 512, 28, 28],
                 "Format/Datatype": "Thirty-two wide channel vectorized row major Int8 format."}],
     "Outputs": [{"Name": "q1", "Dimensions": [16, 256, 28, 28], "Format/Datatype": "Row major linear FP32"}],
     "Weights": {"Type": "Int8", "Count": 131072}, "Bias": {"Type": "Float", "Count": 256}},
    {"Name": "/dec0/conv/Conv", "LayerType": "CaskConvolution",
     "Inputs": [{"Name": "x", "Dimensions": [-1, 128, -1, -1], "Format/Datatype": "N/A due to dynamic shapes"}],
     "Outputs": [{"Name": "y", "Dimensions": [-1, 12, -1, -1], "Format/Datatype": "N/A due to dynamic shapes"}],
     "TacticName": "sm80_xmma_fprop_implicit_gemm_interleaved_i8i8_i8i32_f32_nchw_vect_c_32kcrs_vect_c_32"},
    {"Name": "/head/Conv", "LayerType": "CaskConvolution",
     "Inputs": [{"Name": "z", "DataType": "Float", "Format": "Row major linear FP32 format (kLINEAR)"}],
     "Outputs": [{"Name": "logits", "DataType": "Float", "Format": "Row major linear FP32 format (kLINEAR)"}]},
    {"Name": "/Shape + /Gather", "LayerType": "Shape",
     "Inputs": [{"Name": "image", "Format/Datatype": "Row major linear Int32"}],
     "Outputs": [{"Name": "s", "Format/Datatype": "Row major linear Int64"}]},
    "name-only layer (LAYER_NAMES_ONLY)",
], "Bindings": ["image", "logits"]})


def test_parse_layer_precisions() -> None:
    layers = parse_layer_precisions(INSPECTOR)
    assert list(layers.values()) == ["fp16", "fp16", "int8", "int8", "fp32", "unknown", "unknown"]
    assert layers["/enc0/conv/Conv + /enc0/act/Relu"] == "fp16"
    assert precision_counts(layers) == {"fp16": 2, "fp32": 1, "int8": 2, "unknown": 2}
    with pytest.raises(ArtifactError, match="inspector"):
        parse_layer_precisions("{\"Bindings\": []}")
    with pytest.raises(ArtifactError, match="inspector"):
        parse_layer_precisions("not json")


# ---- compatibility at load --------------------------------------------------------------------------------

def _meta(**changes: Any) -> dict[str, Any]:
    return {"tensorrt_version": "10.3.0.30", "compute_capability": [8, 7], "gpu_name": "Orin",
            "version_compatible": False, "hardware_compatibility": "none", "dla_core": None,
            "precision_requested": "fp16", "onnx_bundle": {"path": "out/liver.edgemed"}, **changes}


def test_check_engine_compatible() -> None:
    check_engine_compatible(_meta(), ORIN_HOST)
    check_engine_compatible(_meta(), {**ORIN_HOST, "tensorrt_version": "10.3.0.26"})  # build number ignored
    with pytest.raises(CompatibilityError) as err:
        check_engine_compatible(_meta(), {**ORIN_HOST, "tensorrt_version": "10.7.0"}, engine="liver.engine.d")
    message = str(err.value)
    assert message.startswith("liver.engine.d was built with TensorRT 10.3.0; this host has TensorRT 10.7.0")
    assert "edgemed build out/liver.edgemed --target ID --precision fp16" in message
    with pytest.raises(CompatibilityError, match=r"compute capability 8.7 \(Orin\); this GPU \(RTX\) is 8.9"):
        check_engine_compatible(_meta(), {**ORIN_HOST, "compute_capability": [8, 9], "gpu_name": "RTX"})
    later = {**ORIN_HOST, "tensorrt_version": "10.7.0"}
    check_engine_compatible(_meta(version_compatible=True), later)
    with pytest.raises(CompatibilityError, match="version-compatible with TensorRT 10.7.0"):
        check_engine_compatible(_meta(version_compatible=True, tensorrt_version="10.7.0"), ORIN_HOST)
    hw = _meta(hardware_compatibility="ampere_plus", compute_capability=[8, 6])
    check_engine_compatible(hw, {**ORIN_HOST, "compute_capability": [9, 0]})
    with pytest.raises(CompatibilityError, match="Ampere-or-newer GPUs; this GPU .* 7.5"):
        check_engine_compatible(hw, {**ORIN_HOST, "compute_capability": [7, 5]})
    with pytest.raises(CompatibilityError, match="--dla-core 1"):
        check_engine_compatible(_meta(dla_core=1), {**ORIN_HOST, "dla_cores": 1})


# ---- the engine bundle --------------------------------------------------------------------------------------

def _engine(bundle: OnnxBundle, out: Path, *, built: Precision = Precision.FP16, reason: str | None = None,
            cache: bytes | None = b"timing-cache-bytes") -> EngineBundle:
    config = TrtBuildConfig(fallback="fp32" if reason else "none", timing_cache=out.parent / "t.cache")
    profiles = derive_shape_profiles(bundle, config)
    meta = engine_metadata(bundle, ORIN_NX, config, profiles, local=ORIN_HOST, precision_built=built,
                           fallback_reason=reason, builder_flags=["FP16"],
                           layer_precisions=parse_layer_precisions(INSPECTOR), timing_cache=cache, build_seconds=12.5)
    return write_engine_bundle(out, plan=b"\x00fake serialized plan", metadata=meta, parent=bundle.manifest.digest,
                               timing_cache=cache)


def test_engine_bundle_round_trip(bundle: OnnxBundle, tmp_path: Path) -> None:
    engine = _engine(bundle, tmp_path / "liver.engine.d")
    assert sorted(p.name for p in engine.path.iterdir()) == ["manifest.json", "model.engine", "timing.cache"]
    assert (engine.path / "model.engine").read_bytes() == b"\x00fake serialized plan"  # raw plan, no header
    assert engine.manifest.kind == "engine" and engine.manifest.parent == bundle.manifest.digest
    assert engine.format == "tensorrt" and engine.precision == "fp16"
    assert engine.tensorrt_version == "10.3.0.30" and engine.compute_capability == (8, 7)
    assert engine.model_path == engine.path / "model.engine"
    # What the runtime needs to segment, copied from the ONNX bundle.
    assert engine.inputs == bundle.inputs and engine.outputs == bundle.outputs
    assert engine.preprocess == bundle.preprocess and engine.postprocess == bundle.postprocess
    assert engine.organs == bundle.organs and engine.label_map == bundle.label_map
    assert engine.validation_dice == bundle.validation_dice
    meta = engine.metadata
    assert meta["precision_requested"] == meta["precision_built"] == "fp16" and meta["fallback"] is None
    assert meta["cuda_version"] == "12.6" and meta["gpu_name"] == "Orin"
    assert meta["shape_profiles"] == {"image": {"min": [1, 3, 24, 24], "opt": [8, 3, 44, 44], "max": [16, 3, 64, 64]}}
    assert meta["timing_cache"] == {"file": "timing.cache", "sha256": timing_cache_sha256(b"timing-cache-bytes")}
    assert meta["layer_precision_counts"] == {"fp16": 2, "fp32": 1, "int8": 2, "unknown": 2}
    assert meta["workspace_mib"] == 1024 and meta["dla_core"] is None
    assert meta["hardware_compatibility"] == "none" and meta["version_compatible"] is False
    assert meta["onnx_bundle"]["digest"] == bundle.manifest.digest and meta["target"]["id"] == "jetson-orin-nx-16gb"
    check_engine_compatible(meta, ORIN_HOST)  # the manifest carries what the runtime check reads
    reopened = open_bundle(engine.path)
    assert isinstance(reopened, EngineBundle) and reopened.manifest == engine.manifest
    assert type(open_bundle(bundle.path)) is OnnxBundle
    with pytest.raises(ArtifactError, match="'engine' artifact, but a 'bundle'"):
        OnnxBundle.load(engine.path)
    (engine.path / "model.engine").write_bytes(b"tampered")
    with pytest.raises(ArtifactError, match="altered"):
        EngineBundle.load(engine.path)


def test_fallback_is_recorded(bundle: OnnxBundle, tmp_path: Path) -> None:
    engine = _engine(bundle, tmp_path / "e", built=Precision.FP32, reason="this GPU has no fast fp16", cache=None)
    assert engine.precision == "fp32" and engine.metadata["precision_requested"] == "fp16"
    assert engine.metadata["fallback"] == {"from": "fp16", "to": "fp32", "reason": "this GPU has no fast fp16"}
    assert engine.metadata["timing_cache"] is None and not (engine.path / "timing.cache").exists()
    with pytest.raises(ArtifactError, match="empty"):
        write_engine_bundle(tmp_path / "x", plan=b"", metadata=engine.metadata, parent="p")


# ---- without TensorRT, and the CLI --------------------------------------------------------------------------

def test_build_without_tensorrt_says_how_to_get_it(bundle: OnnxBundle, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependencyError, match=r"tensorrt is needed.*edgemed\[trt\].*JetPack.*pypi.nvidia.com"):
        build_engine(bundle.path, "jetson-orin-nx-16gb", TrtBuildConfig(), tmp_path / "e")
    assert not (tmp_path / "e").exists()


def test_cli_print_config_needs_no_tensorrt(bundle: OnnxBundle, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgemed.cli import _cli

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    result = CliRunner().invoke(_cli, ["build", str(bundle.path), "--target", "jetson-orin-nx-16gb", "--precision",
                                       "fp16", "--batch", "1", "4", "8", "--dla-core", "1", "--print-config"])
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    assert shown["target"] == "jetson-orin-nx-16gb" and shown["config"]["dla_core"] == 1
    assert shown["config"]["batch"] == [1, 4, 8] and shown["config"]["precision"] == "fp16"
    assert shown["shape_profiles"]["image"] == {"min": [4, 3, 64, 64], "opt": [4, 3, 64, 64], "max": [4, 3, 64, 64]}


def test_cli_build_without_tensorrt_is_one_paragraph(bundle: OnnxBundle, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from edgemed.cli import main

    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(SystemExit) as exit_:
        main(["build", str(bundle.path), "--target", "rtx-4090", "--out", str(tmp_path / "e")])
    err = capsys.readouterr().err
    assert exit_.value.code == 1
    assert err.startswith("error: tensorrt is needed") and "JetPack" in err
    assert "Traceback" not in err and err.count("\n") == 1
    with pytest.raises(SystemExit) as exit_:
        main(["build", str(bundle.path), "--target", "jetson-orin-nano-8gb", "--dla-core", "0", "--print-config"])
    assert exit_.value.code == 2 and "has no DLA" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        main(["build", str(bundle.path), "--target", "rtx-4090"])
    assert exit_.value.code == 2 and "--out is required" in capsys.readouterr().err
