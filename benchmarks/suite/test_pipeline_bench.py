"""pytest-benchmark: the volume pipeline of a bundle, stage by stage — read → preprocess → infer → postprocess.

    .venv/bin/python -m pytest benchmarks/suite/test_pipeline_bench.py --benchmark-only
    .venv/bin/python -m pytest benchmarks/suite/test_pipeline_bench.py --edgemed-bundle out/liver.edgemed \\
        --edgemed-scan ct.nii.gz --edgemed-threads 4 --benchmark-json out/pipeline.json

Without options it builds a small phantom liver student and uses the gate's CT phantom. The
segment benchmark records the median per-stage split (`Segmenter.last_timings`) in extra_info.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

ROUNDS = dict(rounds=10, warmup_rounds=2, iterations=1)


def test_read(benchmark, pipeline_scan: Path) -> None:  # type: ignore[no-untyped-def]
    from edgemed.io import read_volume

    benchmark.group = "pipeline"
    volume = benchmark.pedantic(read_volume, args=(pipeline_scan,), **ROUNDS)
    assert volume.array.ndim == 3


def test_preprocess(benchmark, pipeline_bundle: Path, pipeline_scan: Path) -> None:  # type: ignore[no-untyped-def]
    from edgemed.io import prepare_volume, read_volume
    from edgemed.runtime import OnnxBundle

    benchmark.group = "pipeline"
    spec = OnnxBundle.load(pipeline_bundle).preprocess
    image, _ = benchmark.pedantic(prepare_volume, args=(read_volume(pipeline_scan), spec), **ROUNDS)
    assert image.ndim == 3


def test_segment_stages(benchmark, pipeline_bundle: Path, pipeline_scan: Path, backend: str,  # type: ignore[no-untyped-def]
                        threads: int) -> None:
    """preprocess + inference + postprocess (one `segment` call); the split goes into extra_info."""
    from edgemed.io import read_volume
    from edgemed.runtime import load

    benchmark.group = "pipeline"
    volume = read_volume(pipeline_scan)
    stages: dict[str, list[float]] = {"preprocess_ms": [], "inference_ms": [], "postprocess_ms": []}

    with load(pipeline_bundle, backend=backend, threads=threads) as seg:
        def run():  # type: ignore[no-untyped-def]
            mask = seg.segment(volume)
            t = seg.last_timings
            for key in stages:
                stages[key].append(getattr(t, key))
            return mask

        mask = benchmark.pedantic(run, **ROUNDS)
        benchmark.extra_info.update({k: float(np.median(v)) for k, v in stages.items()},
                                    backend=seg.backend, threads=threads, slices=seg.last_timings.slices)
    assert mask.shape == volume.shape


def test_read_to_mask(benchmark, pipeline_bundle: Path, pipeline_scan: Path, backend: str,  # type: ignore[no-untyped-def]
                      threads: int) -> None:
    """End to end: read the file, segment, label map in hand."""
    from edgemed.io import read_volume
    from edgemed.runtime import load

    benchmark.group = "pipeline"
    with load(pipeline_bundle, backend=backend, threads=threads) as seg:
        mask = benchmark.pedantic(lambda: seg.segment(read_volume(pipeline_scan)), **ROUNDS)
    assert mask.array.dtype.kind == "u"


def test_segment_via_edgemed_testing(benchmark, pipeline_bundle: Path, pipeline_scan: Path) -> None:  # type: ignore[no-untyped-def]
    """The helper users call from their own suites: `edgemed.testing.bench_segment`."""
    from edgemed.testing import bench_segment

    benchmark.group = "pipeline"
    mask = bench_segment(benchmark, pipeline_bundle, pipeline_scan, rounds=5)
    assert mask.array.ndim == 3
