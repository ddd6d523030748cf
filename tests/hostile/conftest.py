"""Fixtures for the hostile tests: a tiny phantom bundle, signing keys and a DICOM series full of sentinels."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from _keys import make_keys
from _phantom_pairs import write_phantom_pairs
from _hostile import write_sentinel_series

from edgemed.artifacts import PreprocessSpec, StudentCheckpoint
from edgemed.compress import DistillConfig, distill
from edgemed.phantom import PhantomConfig
from edgemed.runtime import OnnxBundle

SMALL = PhantomConfig(shape=(48, 40, 24), spacing_mm=(8.0, 8.0, 10.0))
_FAST = dict(student="unet2d", student_kwargs={"widths": [8, 16, 32]}, batch_size=8, lr=1e-2, threads=1,
             ema_decay=None)


def _run(args: list[str], *, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edgemed", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def run_cli():  # type: ignore[no-untyped-def]
    """Run `edgemed ARGS` in a subprocess (as a user would): (exit code, stdout, stderr)."""
    return _run


@pytest.fixture(scope="session")
def phantom_student(tmp_path_factory: pytest.TempPathFactory) -> StudentCheckpoint:
    root = tmp_path_factory.mktemp("hostile_phantom")
    scans, segs = write_phantom_pairs(root, range(2), SMALL)
    config = DistillConfig(organs=("liver",), epochs=4,
                           preprocess=PreprocessSpec(spacing_mm=(8.0, 8.0), context_slices=1, pad_multiple=4), **_FAST)
    return distill(scans, config, root / "liver", teacher_predictions=segs, progress=False)


@pytest.fixture(scope="session")
def phantom_bundle(phantom_student: StudentCheckpoint, tmp_path_factory: pytest.TempPathFactory) -> OnnxBundle:
    from edgemed.export import to_onnx

    return to_onnx(phantom_student, tmp_path_factory.mktemp("hostile_bundle") / "liver.edgemed")


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_keys(tmp_path_factory.mktemp("hostile_keys"))


@pytest.fixture()
def sentinel_series(tmp_path: Path, real_data: Path) -> Path:
    return write_sentinel_series(tmp_path / "SENTINEL^PN^1234_19010101", real_data / "dcmqi_ct3slice" / "ct")


