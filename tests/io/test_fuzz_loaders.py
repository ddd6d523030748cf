"""Fuzzing in CI (a few hundred inputs per loader; benchmarks/suite/fuzz_loaders.py runs >= 100 000).

Every input must either load or raise an EdgemedError within the time limit (see _fuzz_targets).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from _fuzz_targets import Target, make_targets, strategy
from hypothesis import HealthCheck, given, settings

CI_EXAMPLES = 150


@pytest.fixture(scope="module")
def targets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Target]:
    from _phantom_pairs import tiny_liver_bundle

    root = tmp_path_factory.mktemp("fuzz")
    bundle, _, _ = tiny_liver_bundle(root / "b")
    return {t.name: t for t in make_targets(root / "seeds", bundle)}


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("name", ["nifti", "nifti_gz", "nifti_labels", "dicom", "manifest", "bundle"])
def test_loader_raises_only_edgemed_errors(targets: dict[str, Target], name: str) -> None:
    target = targets[name]

    @settings(max_examples=CI_EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(strategy(target))
    def run(data: bytes) -> None:
        target.check(data)

    run()
    assert target.inputs >= CI_EXAMPLES and target.findings == []
    assert target.refused > 0, "the mutations should hit the loader's error paths"
