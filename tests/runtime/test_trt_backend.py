"""TensorRT backend. On CPU: shape fitting, load dispatch for engine bundles, the messages without
TensorRT, no torch on import. On an NVIDIA GPU with TensorRT (`-m gpu`, benchmarks/gpu_trt_check.sh):
engines built from a bundle agree with ONNX Runtime on logits and masks."""

from __future__ import annotations

import json
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from _no_torch import run_without_torch
from edgemed.errors import BackendError, CompatibilityError, ConfigError, InputError, MissingDependencyError
from edgemed.io import Volume
from edgemed.metrics import dice
from edgemed.runtime import EngineBundle, OnnxBundle, Session, load
from edgemed.runtime.backends.ort import OrtSession
from edgemed.runtime.backends.trt import TrtSession, fit_to_profile

ORIN_HOST = {"tensorrt_version": "10.3.0", "gpu_name": "Orin", "compute_capability": [8, 7], "dla_cores": 2}


def _write_engine(bundle: OnnxBundle, out: Path, *, plan: bytes, local: dict[str, Any], target: Any,
                  config: Any, built: Any = None, layers: dict[str, str] | None = None,
                  cache: bytes | None = None) -> EngineBundle:
    from edgemed.export._trt import engine_metadata, write_engine_bundle
    from edgemed.export._trt_config import derive_shape_profiles

    meta = engine_metadata(bundle, target, config, derive_shape_profiles(bundle, config), local=local,
                           precision_built=built or config.precision, fallback_reason=None, builder_flags=[],
                           layer_precisions=layers or {}, timing_cache=cache, build_seconds=1.0)
    return write_engine_bundle(out, plan=plan, metadata=meta, parent=bundle.manifest.digest, timing_cache=cache)


@pytest.fixture(scope="module")
def fake_engine(phantom_bundle: OnnxBundle, tmp_path_factory: pytest.TempPathFactory) -> EngineBundle:
    from edgemed.export import TrtBuildConfig
    from edgemed.profiles import get_profile

    return _write_engine(phantom_bundle, tmp_path_factory.mktemp("fake_engine") / "liver.engine.d",
                         plan=b"not a real plan", local=ORIN_HOST, target=get_profile("jetson-orin-nx-16gb"),
                         config=TrtBuildConfig())


# ---- CPU ---------------------------------------------------------------------------------------------------

def _double(x: np.ndarray) -> dict[str, np.ndarray]:
    """A stand-in engine: 2 output channels of the same height and width, recording the shapes it saw."""
    _double.seen.append(x.shape)  # type: ignore[attr-defined]
    return {"logits": np.stack([x[:, 0] * 2, x[:, 1] + 1], axis=1)}


def test_fit_to_profile_splits_pads_and_crops() -> None:
    lo, hi = (1, 3, 16, 16), (4, 3, 32, 32)
    x = np.random.default_rng(0).random((10, 3, 12, 20), dtype=np.float32)
    _double.seen = []  # type: ignore[attr-defined]
    out = fit_to_profile(x, lo, hi, _double)["logits"]
    assert _double.seen == [(4, 3, 16, 20), (4, 3, 16, 20), (2, 3, 16, 20)]  # type: ignore[attr-defined]
    assert out.shape == (10, 2, 12, 20)
    np.testing.assert_array_equal(out, _double(x)["logits"])
    fixed = (8, 3, 32, 32)  # a DLA engine: one shape
    assert fit_to_profile(x[:3], fixed, fixed, _double)["logits"].shape == (3, 2, 12, 20)
    assert _double.seen[-1] == fixed  # type: ignore[attr-defined]
    with pytest.raises(InputError, match=r"exceeds the engine's largest shape .* --size-px"):
        fit_to_profile(np.zeros((1, 3, 40, 16), np.float32), lo, hi, _double)


def test_trt_session_refuses_an_onnx_file(phantom_bundle: OnnxBundle) -> None:
    with pytest.raises(ConfigError, match="backend 'trt' runs TensorRT engines.*edgemed build"):
        TrtSession(phantom_bundle.model_path)


def test_load_dispatches_engine_bundles(fake_engine: EngineBundle, phantom_bundle: OnnxBundle,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="runs only on backend='trt'"):
        load(fake_engine.path, backend="ort")
    with pytest.raises(ConfigError, match=r"is an ONNX bundle.*edgemed build"):
        load(phantom_bundle, backend="trt")
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    with pytest.raises(MissingDependencyError, match=r"edgemed\[trt\].*JetPack"):
        load(fake_engine)


def test_trt_backend_imports_without_torch_or_tensorrt(fake_engine: EngineBundle) -> None:
    result = run_without_torch(
        "import edgemed.runtime.backends.trt, edgemed.export, edgemed.cli._build\n"
        "from edgemed.errors import MissingDependencyError\n"
        "from edgemed.runtime import load\n"
        "try:\n"
        "    load(sys.argv[1])\n"
        "    raise SystemExit('loaded without tensorrt')\n"
        "except MissingDependencyError as err:\n"
        "    assert 'JetPack' in str(err), err\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorrt', 'cuda', 'onnxslim')]\n"
        "assert not heavy, heavy\n",
        str(fake_engine.path),
    )
    assert result.returncode == 0, result.stderr


# ---- GPU (TensorRT) ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def gpu_host() -> dict[str, Any]:
    trt = pytest.importorskip("tensorrt")
    from edgemed.runtime.backends.trt import import_cudart, local_gpu_facts

    try:
        cudart = import_cudart()
        return local_gpu_facts(trt, cudart)
    except (MissingDependencyError, BackendError) as err:
        pytest.skip(f"no usable CUDA GPU / cuda-python: {err}")


@pytest.fixture(scope="module")
def engines(gpu_host: dict[str, Any], phantom_bundle: OnnxBundle,
            tmp_path_factory: pytest.TempPathFactory) -> dict[str, EngineBundle]:
    from edgemed.export import TrtBuildConfig, build_engine
    from edgemed.profiles import Accelerator, Precision, TargetProfile

    cc = tuple(gpu_host["compute_capability"])
    here = TargetProfile(id="this-gpu", name=gpu_host["gpu_name"], accelerator=Accelerator.GPU,
                         peak_tops={Precision.FP32: 1.0, Precision.FP16: 1.0, Precision.INT8: 1.0},
                         memory_bandwidth_gbs=100.0, memory_mib=4096,
                         precisions=frozenset({Precision.FP32, Precision.FP16, Precision.INT8}),
                         compute_capability=cc, tensorrt=gpu_host["tensorrt_version"], preferred_backend="trt")
    root = tmp_path_factory.mktemp("engines")
    return {p: build_engine(phantom_bundle, here, TrtBuildConfig(precision=p, timing_cache=root / "timing.cache"),
                            root / f"liver-{p}.engine.d") for p in ("fp32", "fp16")}


# (max |Δlogit| vs ONNX Runtime, least mask agreement): the export's parity tolerances per precision.
TOLERANCE = {"fp32": (1e-3, 0.999), "fp16": (5e-2, 0.99)}


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_trt_session_matches_ort(precision: str, engines: dict[str, EngineBundle], phantom_bundle: OnnxBundle) -> None:
    atol, min_agree = TOLERANCE[precision]
    rng = np.random.default_rng(0)
    with TrtSession(engines[precision].model_path) as trt, OrtSession(phantom_bundle.model_path, threads=1) as ort:
        assert isinstance(trt, Session) and [s.name for s in trt.inputs] == ["image"]
        for shape in [(5, 3, 40, 48), (1, 3, 24, 24), (20, 3, 64, 64)]:  # the last is split 16 + 4
            x = rng.random(shape, dtype=np.float32)
            got, ref = trt.run({"image": x})["logits"], ort.run({"image": x})["logits"]
            assert got.shape == ref.shape and got.dtype == np.float32
            assert np.abs(got - ref).max() <= atol, (shape, float(np.abs(got - ref).max()))
            assert (got.argmax(1) == ref.argmax(1)).mean() >= min_agree
        # Below the profile's minimum (24 px) the input is zero-padded: same shape out, borders may differ.
        small = trt.run({"image": rng.random((3, 3, 16, 20), dtype=np.float32)})["logits"]
        assert small.shape == (3, 2, 16, 20) and np.isfinite(small).all()


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_trt_segment_matches_ort(precision: str, engines: dict[str, EngineBundle], phantom_bundle: OnnxBundle,
                                 phantom_cts: list[Volume]) -> None:
    with load(engines[precision].path) as seg, load(phantom_bundle, backend="ort", threads=1) as ref:
        assert seg.backend == "trt"
        for ct in phantom_cts:
            got, want = seg.segment(ct).array, ref.segment(ct).array
            assert (want == 5).sum() > 50
            assert dice(got == 5, want == 5) >= TOLERANCE[precision][1]


@pytest.mark.gpu
def test_manifest_records_the_build(engines: dict[str, EngineBundle], gpu_host: dict[str, Any]) -> None:
    for precision, engine in engines.items():
        meta = engine.metadata
        assert meta["precision_requested"] == meta["precision_built"] == precision
        assert meta["tensorrt_version"] == gpu_host["tensorrt_version"]
        assert meta["compute_capability"] == gpu_host["compute_capability"] and meta["gpu_name"]
        counts = meta["layer_precision_counts"]
        assert sum(counts.values()) > 0 and set(counts) <= {"fp32", "fp16", "tf32", "int8", "unknown"}
        if precision == "fp32":
            assert "fp16" not in counts and "int8" not in counts
        cache = engine.path / "timing.cache"
        assert cache.is_file() and meta["timing_cache"]["sha256"] == engine.manifest.files["timing.cache"]


@pytest.mark.gpu
def test_engine_for_another_gpu_is_refused(engines: dict[str, EngineBundle], tmp_path: Path) -> None:
    moved = tmp_path / "other.engine.d"
    shutil.copytree(engines["fp16"].path, moved)
    raw = json.loads((moved / "manifest.json").read_text())
    raw["metadata"]["compute_capability"] = [5, 3]  # a GPU TensorRT 10 does not even support
    (moved / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(CompatibilityError, match=r"compute capability 5.3.*edgemed build"):
        load(moved)


@pytest.mark.gpu
def test_threads_share_one_trt_segmenter(engines: dict[str, EngineBundle], phantom_cts: list[Volume]) -> None:
    with load(engines["fp32"]) as seg:
        serial = [seg.segment(ct, batch_size=8).array for ct in phantom_cts]
        with ThreadPoolExecutor(max_workers=3) as pool:
            parallel = list(pool.map(lambda ct: seg.segment(ct, batch_size=8).array, phantom_cts * 2))
    for i, got in enumerate(parallel):
        np.testing.assert_array_equal(got, serial[i % len(phantom_cts)])
