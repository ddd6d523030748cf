"""Shared fixtures: the real data folder (EDGEMED_DATA) and small generated inputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

_DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def data_root() -> Path:
    """Where the real scans live: $EDGEMED_DATA, else ../shared/data beside the checkout."""
    return Path(os.environ.get("EDGEMED_DATA", _DEFAULT_DATA))


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The real-data folder; skips the test with a clear reason when it is absent."""
    root = data_root()
    if not (root / "totalseg" / "example_ct.nii.gz").exists():
        pytest.skip(f"real scans not found at {root}; set EDGEMED_DATA to the shared data folder")
    return root

