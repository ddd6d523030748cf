"""Fixtures of the pytest-benchmark suites: zoo students exported to ONNX, and a bundle with a scan.

The suites are marked slow and live outside `testpaths`, so `pytest -q` never runs them. Run:

    .venv/bin/python -m pytest benchmarks/ --benchmark-only                 # zoo + pipeline (tiny built bundle)
    .venv/bin/python -m pytest benchmarks/test_pipeline_bench.py --edgemed-bundle out/liver.edgemed \\
        --edgemed-scan ct.nii.gz --benchmark-json out/pipeline.json        # your bundle on your scan
"""

from __future__ import annotations

from pathlib import Path

import pytest

def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("edgemed benchmarks")
    group.addoption("--edgemed-bundle", default=None, help="Benchmark this bundle (default: a tiny one built here).")
    group.addoption("--edgemed-scan", default=None, help="On this scan (default: the gate's built-in CT phantom).")
    group.addoption("--edgemed-threads", type=int, default=1, help="Backend threads (default 1).")
    group.addoption("--edgemed-backend", default="auto", help="Backend: auto, ort, openvino (default auto).")


@pytest.fixture(scope="session")
def threads(request: pytest.FixtureRequest) -> int:
    return int(request.config.getoption("--edgemed-threads"))


@pytest.fixture(scope="session")
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.config.getoption("--edgemed-backend"))


@pytest.fixture(scope="session")
def pipeline_bundle(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """--edgemed-bundle, else a small liver student distilled on phantoms and exported (about 10 s)."""
    given = request.config.getoption("--edgemed-bundle")
    if given:
        return Path(given)
    from _phantom_bundle import phantom_bundle

    return phantom_bundle(tmp_path_factory.mktemp("bench_bundle"), spacing_mm=4.0, epochs=4)


@pytest.fixture(scope="session")
def pipeline_scan(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """--edgemed-scan, else the gate's built-in CT phantom written as NIfTI (the read stage needs a file)."""
    given = request.config.getoption("--edgemed-scan")
    if given:
        return Path(given)
    from edgemed.bench import read_inputs
    from edgemed.io import write_nifti

    return write_nifti(read_inputs(None, None, "CT").volume, tmp_path_factory.mktemp("bench_scan") / "ct.nii.gz")
