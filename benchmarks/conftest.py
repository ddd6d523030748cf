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
    from edgemed.artifacts import PreprocessSpec
    from edgemed.compress import DistillConfig, distill
    from edgemed.export import to_onnx
    from edgemed.io import write_nifti
    from edgemed.phantom import PhantomConfig, make_phantom

    root = tmp_path_factory.mktemp("bench_bundle")
    scans, segs = [], []
    for seed in (0, 1):
        ct, labels = make_phantom(seed, PhantomConfig())
        scans.append(write_nifti(ct, root / f"ct{seed}.nii.gz"))
        segs.append(write_nifti(labels, root / f"seg{seed}.nii.gz"))
    config = DistillConfig(organs=("liver",), epochs=4, student_kwargs={"widths": [8, 16, 32, 64]}, threads=1,
                           ema_decay=None, preprocess=PreprocessSpec(spacing_mm=(4.0, 4.0), context_slices=1,
                                                                     pad_multiple=8))
    student = distill(scans, config, root / "student", teacher_predictions=segs, progress=False)
    return to_onnx(student, root / "liver.edgemed").path


@pytest.fixture(scope="session")
def pipeline_scan(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """--edgemed-scan, else the gate's built-in CT phantom written as NIfTI (the read stage needs a file)."""
    given = request.config.getoption("--edgemed-scan")
    if given:
        return Path(given)
    from edgemed.bench import read_inputs
    from edgemed.io import write_nifti

    return write_nifti(read_inputs(None, None, "CT").volume, tmp_path_factory.mktemp("bench_scan") / "ct.nii.gz")
