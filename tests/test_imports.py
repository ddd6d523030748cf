"""Device-side packages never import torch; `edgemed --help` is instant (loads no heavy library)."""

from __future__ import annotations

import pytest
from _no_torch import run_without_torch


@pytest.mark.parametrize("module", ["edgemed", "edgemed.io", "edgemed.artifacts", "edgemed.runtime",
                                    "edgemed.profiles", "edgemed.export", "edgemed.metrics", "edgemed.phantom",
                                    "edgemed.models.teachers", "edgemed.bench", "edgemed.measure", "edgemed.testing",
                                    "edgemed.serve", "edgemed.cli._serve"])
def test_device_side_modules_import_without_torch(module: str) -> None:
    result = run_without_torch(f"import {module}\nassert 'torch' not in sys.modules\n")
    assert result.returncode == 0, result.stderr


def test_cli_help_loads_no_heavy_library() -> None:
    result = run_without_torch(
        "from edgemed.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('torch', 'onnxruntime', 'nibabel', 'pydicom') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    assert result.returncode == 0, result.stderr
    assert "distill" in result.stdout


def test_runtime_needs_only_numpy_and_a_backend() -> None:
    """Device software embeds the runtime with numpy + onnxruntime: no torch, nibabel, pydicom or scipy."""
    result = run_without_torch(
        "import edgemed.runtime\n"
        "from edgemed.io import prepare_volume, context_stack, from_student_grid\n"
        "extra = [m for m in ('nibabel', 'pydicom', 'scipy', 'onnx', 'click') if m in sys.modules]\n"
        "assert not extra, extra\n"
    )
    assert result.returncode == 0, result.stderr
