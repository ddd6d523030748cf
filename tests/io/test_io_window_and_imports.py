"""Intensity scaling, the public surface, and the promise that edgemed.io loads no torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import edgemed.io
from edgemed.errors import ConfigError
from edgemed.io import normalize_mr, window_hu


def test_window_hu_clips_and_scales() -> None:
    hu = np.array([-2000, -160, 40, 240, 3000], np.int16)
    out = window_hu(hu, window_hu=(-160, 240))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0])
    assert hu[0] == -2000  # input untouched
    with pytest.raises(ConfigError, match="low < high"):
        window_hu(hu, window_hu=(240, -160))
    with pytest.raises(ConfigError, match="two numbers"):
        window_hu(hu, window_hu=(1, 2, 3))


def test_normalize_mr_uses_robust_percentiles() -> None:
    values = np.arange(1000, dtype=np.float32)
    values[-1] = 1e6  # one hot outlier must not squash the rest
    out = normalize_mr(values)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0
    assert 0.45 < float(out[500]) < 0.55
    np.testing.assert_array_equal(normalize_mr(np.full((3, 3), 7.0)), 0.0)
    with pytest.raises(ConfigError):
        normalize_mr(values, percentiles=(99.0, 1.0))


def test_public_names_are_documented() -> None:
    assert edgemed.io.__doc__
    for name in edgemed.io.__all__:
        if name == "Order":  # a typing.Literal alias: it cannot carry a docstring
            continue
        assert getattr(edgemed.io, name).__doc__, name


def test_import_loads_no_torch() -> None:
    code = "import sys, edgemed.io; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False", result.stderr
