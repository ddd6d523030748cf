"""pytest-benchmark: inference latency of every zoo student (ONNX Runtime and OpenVINO, FP32, random weights).

    .venv/bin/python -m pytest benchmarks/suite/test_zoo_bench.py --benchmark-only [--benchmark-json zoo.json]

Each call runs one batch of the liver student's input (16 slices of 9 x 128 x 112); weights are
random, which does not change the time. FLOPs and parameters go into each result's extra_info.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from _zoo_export import ZOO_INPUT, export_zoo_student

pytestmark = pytest.mark.slow

ARCHS = ["unet2d", "mobile_unet2d", "res_unet2d"]


@pytest.fixture(scope="module", params=ARCHS)
def zoo_onnx(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    return request.param, export_zoo_student(request.param, tmp_path_factory.mktemp("zoo") / f"{request.param}.onnx")


@pytest.mark.parametrize("engine", ["ort", "openvino"])
def test_zoo_student_inference(benchmark, zoo_onnx: tuple[str, Path], engine: str, threads: int) -> None:  # type: ignore[no-untyped-def]
    from edgemed.measure import count_flops, count_parameters
    from edgemed.runtime import open_session

    pytest.importorskip("openvino" if engine == "openvino" else "onnxruntime")
    arch, path = zoo_onnx
    x = np.random.default_rng(0).random(ZOO_INPUT, dtype=np.float32)
    benchmark.group = f"zoo students, batch {ZOO_INPUT[0]} x {ZOO_INPUT[1:]}"
    benchmark.extra_info.update(arch=arch, backend=engine, threads=threads, input=list(ZOO_INPUT),
                                flops=count_flops(path, {"image": ZOO_INPUT}).flops,
                                parameters=count_parameters(path))
    with open_session(engine, path, threads=threads) as session:
        out = benchmark.pedantic(session.run, args=({"image": x},), rounds=10, warmup_rounds=2, iterations=1)
    assert out["logits"].shape == (ZOO_INPUT[0], 2, *ZOO_INPUT[2:])
