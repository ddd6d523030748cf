"""`pip install edgemed` (= edgemed[runtime]) is torch-free and segments with a bundle the full toolkit made.

Builds a fresh venv (no system site-packages) with only the base install, from a copy of the source, using pip's
own configuration and cache (about 30 s when the wheels are cached). Skips when the package index cannot be
reached; any other pip failure fails the test. Part of the default run (CI: .ci/run).
"""

from __future__ import annotations

import importlib.util
import subprocess
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from _phantom_pairs import tiny_liver_bundle

ROOT = Path(__file__).resolve().parents[1]
#: A runtime venv measured 447.0 MiB (142 of it scipy, for HD95); torch alone takes 753.9 MiB (install_size.json).
MAX_SITE_PACKAGES_MIB = 500


def _install_size() -> ModuleType:
    spec = importlib.util.spec_from_file_location("install_size", ROOT / "scripts" / "install_size.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def runtime_venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    size = _install_size()
    tmp = tmp_path_factory.mktemp("runtime_install")
    src = size.copy_source(tmp / "src")
    venv_dir = tmp / "venv"
    done = size.build_venv(venv_dir, str(src), timeout_s=600)
    if done.returncode != 0:
        output = done.stdout + done.stderr
        if size.unreachable(output):
            pytest.skip(f"the package index is unreachable, so a fresh venv cannot be built: {output[-400:]}")
        pytest.fail(f"pip install of the base edgemed failed:\n{output[-4000:]}")
    return venv_dir


def _run(venv_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(venv_dir / "bin" / args[0]), *args[1:]], capture_output=True, text=True,
                          timeout=300, env=_install_size().clean_env(), stdin=subprocess.DEVNULL)


def test_runtime_install_has_no_torch_and_is_small(runtime_venv: Path) -> None:
    size = _install_size()
    no_torch = _run(runtime_venv, "python", "-c", "import torch")
    assert no_torch.returncode != 0 and "No module named 'torch'" in no_torch.stderr, no_torch.stderr
    dists = size.installed(runtime_venv)
    assert "edgemed" in dists
    assert not [d for d in size.TRAINING_ONLY if d in dists], dists
    sp_mib = size.disk_mib(size.site_packages(runtime_venv))
    print(f"runtime-only venv: site-packages {sp_mib:.1f} MiB, venv {size.disk_mib(runtime_venv):.1f} MiB")
    assert sp_mib < MAX_SITE_PACKAGES_MIB, f"site-packages is {sp_mib:.1f} MiB"


def test_runtime_install_segments_a_toolkit_bundle(runtime_venv: Path, tmp_path: Path) -> None:
    from edgemed import runtime
    from edgemed.io import read_labels, read_volume
    from edgemed.metrics import dice

    bundle, scan, _ = tiny_liver_bundle(tmp_path)  # the full toolkit: distill (torch) → export (onnx)
    mask_path = tmp_path / "mask.nii.gz"
    done = _run(runtime_venv, "edgemed", "segment", str(bundle), str(scan), "--out", str(mask_path), "--threads", "1")
    assert done.returncode == 0, done.stderr
    for args in (("--help",), ("segment", "--help"), ("inspect", str(bundle)), ("trust", "verify", str(bundle))):
        shown = _run(runtime_venv, "edgemed", *args)
        assert shown.returncode == 0, (args, shown.stderr)

    with runtime.load(bundle, backend="ort", threads=1) as seg:
        expected = seg.segment(read_volume(scan)).array
    got = read_labels(mask_path).array
    assert got.shape == expected.shape
    assert np.count_nonzero(got) > 0
    assert set(np.unique(got)) == set(np.unique(expected))
    assert dice(got > 0, expected > 0) >= 0.999  # same backend and model; allow a rare argmax tie flip


def test_runtime_install_says_which_extra_a_training_command_needs(runtime_venv: Path, tmp_path: Path) -> None:
    """A training command on a device install: one line naming edgemed[compress], no traceback."""
    from _phantom_pairs import write_phantom_pairs

    from edgemed.phantom import PhantomConfig

    scans, segs = write_phantom_pairs(tmp_path, [0], PhantomConfig(shape=(32, 32, 8), spacing_mm=(8.0, 8.0, 10.0)))
    done = _run(runtime_venv, "edgemed", "distill", "--scans", str(scans[0]), "--organ", "liver",
                "--teacher-predictions", str(segs[0]), "--out", str(tmp_path / "student"))
    assert done.returncode == 1, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert "Traceback" not in done.stderr and len(errors) == 1, done.stderr
    assert errors[0].endswith("Install it: pip install 'edgemed[compress]'") and "torch" in errors[0]
