"""Fixtures of the pytest-benchmark suites: zoo students exported to ONNX, and a bundle with a scan.

The suites are marked slow and live outside `testpaths`, so `pytest -q` never runs them. Run:

    .venv/bin/python -m pytest benchmarks/suite/ --benchmark-only                  # zoo + pipeline (tiny built bundle)
    .venv/bin/python -m pytest benchmarks/suite/test_pipeline_bench.py --edgemed-bundle out/liver.edgemed \\
        --edgemed-scan ct.nii.gz --benchmark-json out/pipeline.json        # your bundle on your scan

With `--benchmark-json J --edgemed-result R` the timings are also written to R in the shared result
schema of benchmarks/_results.py (benchmarks/run_suite.py writes results/zoo_bench.json and
results/pipeline_bench.json this way).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import repo_path, write_result  # noqa: E402

#: pytest-benchmark's statistics, in seconds, kept (as milliseconds) in the shared result.
STATS = ("min", "max", "mean", "stddev", "median", "iqr", "q1", "q3")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("edgemed benchmarks")
    group.addoption("--edgemed-bundle", default=None, help="Benchmark this bundle (default: a tiny one built here).")
    group.addoption("--edgemed-scan", default=None, help="On this scan (default: the gate's built-in CT phantom).")
    group.addoption("--edgemed-threads", type=int, default=1, help="Backend threads (default 1).")
    group.addoption("--edgemed-backend", default="auto", help="Backend: auto, ort, openvino (default auto).")
    group.addoption("--edgemed-result", default=None,
                    help="Also write the timings in the shared result schema here (needs --benchmark-json).")


def pytest_configure(config: pytest.Config) -> None:
    json_path = config.getoption("benchmark_json", default=None)
    if json_path:  # pytest-benchmark writes it at the end and does not create the folder
        Path(json_path).parent.mkdir(parents=True, exist_ok=True)


def pytest_benchmark_update_json(config: pytest.Config, benchmarks: Any, output_json: dict[str, Any]) -> None:
    """--edgemed-result: pytest-benchmark's JSON, summarised into the shared result schema."""
    out = config.getoption("--edgemed-result")
    if not out:
        return
    rows = output_json.get("benchmarks", [])
    files = sorted({row["fullname"].split("::", 1)[0] for row in rows})
    script = files[0] if len(files) == 1 else __file__
    metrics = {"benchmarks": [
        {"name": row["name"], "group": row.get("group"), "params": row.get("params"), "extra_info": row.get("extra_info"),
         "rounds": row["stats"]["rounds"], **{f"{k}_ms": round(row["stats"][k] * 1e3, 3) for k in STATS}}
        for row in rows]}
    settings = {"test_files": files, "benchmark_json": repo_path(str(config.getoption("benchmark_json"))),
                **{name: config.getoption(f"--edgemed-{name}") for name in ("bundle", "scan", "threads", "backend")}}
    write_result(out, benchmark=Path(script).stem.removeprefix("test_"), script=script, config=settings,
                 metrics=metrics, host={"cpu": output_json.get("machine_info", {}).get("cpu", {}).get("brand_raw")})


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
    from edgemed.io import write_nifti
    from edgemed.measure import read_inputs

    return write_nifti(read_inputs(None, None, "CT").volume, tmp_path_factory.mktemp("bench_scan") / "ct.nii.gz")
