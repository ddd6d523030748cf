"""edgemed.testing: the regression gate and bundle benchmarks inside your own pytest suite (NO torch).

A pytest plugin. Installing edgemed registers it (entry point "edgemed.testing" in the pytest11
group); where entry points are disabled (PYTEST_DISABLE_PLUGIN_AUTOLOAD), enable it in the
top-level conftest.py with `pytest_plugins = ["edgemed.testing"]`, or run `pytest -p edgemed.testing`.

Example:
    >>> def test_liver_model_has_not_regressed(edgemed_gate):
    ...     edgemed_gate("out/liver.edgemed", "ci/liver.baseline.json", scan="ct.nii.gz", reference="seg.nii.gz")
    >>> def test_liver_latency(benchmark):            # pytest-benchmark's fixture
    ...     bench_segment(benchmark, "out/liver.edgemed", "ct.nii.gz")

`pytest --edgemed-update-baseline` writes the baselines instead of comparing (run it on the
build you trust, then commit them); `pytest --edgemed-fast` times fewer repeats. The verdict
table is the assertion message when a metric regressed, and each gate's JSON verdict is attached
to the test's report (`record_property`, so `pytest --junitxml` carries it).

Plain Python works too: `assert_no_regression(bundle, baseline)` raises AssertionError with the table.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest

__all__ = ["EdgemedGate", "assert_no_regression", "bench_segment", "edgemed_gate", "make_biased_bundle",
           "make_slower_bundle", "pytest_addoption"]

PathLike = str | os.PathLike[str]


def assert_no_regression(bundle: Any, baseline: PathLike, *, scan: PathLike | None = None,
                         reference: PathLike | None = None, config: Any = None) -> Any:
    """Run the gate (`edgemed.measure.check_bundle`); raise AssertionError with its table if anything regressed.

    Args:
        bundle: The candidate bundle directory.
        baseline: The baseline JSON (`edgemed check ... --update-baseline` writes it).
        scan: The scan to segment (default: the built-in CT phantom).
        reference: A reference label map of `scan`, for Dice.
        config: An `edgemed.measure.GateConfig` (default: its defaults).

    Returns:
        The `GateResult` of a passing gate.

    Raises:
        AssertionError: A metric regressed; the message is the table naming it and by how much.
        EdgemedError: No baseline (says to create one), an incompatible baseline, or a bad input.
    """
    from edgemed.measure import GateConfig, check_bundle

    result = check_bundle(bundle, baseline, scan=scan, reference=reference, config=config or GateConfig())
    if not result.passed:
        raise AssertionError(result.table())
    return result


def make_slower_bundle(bundle: Any, out: PathLike, *, width: int = 16, layers: int = 1,
                       overwrite: bool = False) -> Any:
    """`edgemed.measure.make_slower_bundle`: the same masks, more work (to test that a gate fails)."""
    from edgemed.measure import make_slower_bundle as make

    return make(bundle, out, width=width, layers=layers, overwrite=overwrite)


def make_biased_bundle(bundle: Any, out: PathLike, *, bias: Any, overwrite: bool = False) -> Any:
    """`edgemed.measure.make_biased_bundle`: the same work, shifted masks (to test that a gate fails)."""
    from edgemed.measure import make_biased_bundle as make

    return make(bundle, out, bias=bias, overwrite=overwrite)


def bench_segment(benchmark: Any, bundle: Any, scan: PathLike | None = None, *, backend: str = "auto",
                  threads: int | None = 1, rounds: int = 20, warmup_rounds: int = 2) -> Any:
    """Time `Segmenter.segment` of a bundle on a scan with pytest-benchmark's `benchmark` fixture.

    Args:
        benchmark: pytest-benchmark's fixture.
        bundle: The bundle directory.
        scan: The scan (default: the gate's built-in CT phantom).
        backend: Backend name or "auto".
        threads: Backend threads (None: the physical cores).
        rounds: Timed rounds (one `segment` call each).
        warmup_rounds: Untimed rounds first.

    Returns:
        The label map of the last call (an `edgemed.io.Volume`).
    """
    from edgemed import runtime
    from edgemed.measure import read_inputs
    from edgemed.artifacts import open_bundle

    opened = open_bundle(bundle)
    volume = read_inputs(scan, None, opened.preprocess.modality).volume
    with runtime.load(opened, backend=backend, threads=threads) as seg:
        benchmark.extra_info.update(bundle=opened.path.name, backend=seg.backend, threads=threads,
                                    scan_shape=list(volume.shape))
        return benchmark.pedantic(seg.segment, args=(volume,), rounds=rounds, warmup_rounds=warmup_rounds,
                                  iterations=1)


class EdgemedGate:
    """The `edgemed_gate` fixture's value: call it to gate a bundle (or write its baseline).

    Args:
        update: Write baselines instead of comparing (`--edgemed-update-baseline`).
        fast: Use `GateConfig.with_fast()` (`--edgemed-fast`).
        record: Where to attach each verdict (pytest's `record_property`).
    """

    def __init__(self, *, update: bool = False, fast: bool = False,
                 record: Callable[[str, object], None] | None = None) -> None:
        self.update = update
        self.fast = fast
        self._record = record
        self.results: list[Any] = []

    def __call__(self, bundle: Any, baseline: PathLike, *, scan: PathLike | None = None,
                 reference: PathLike | None = None, config: Any = None) -> Any:
        """Gate `bundle` against `baseline`; fails the test with the verdict table on a regression.

        Returns:
            The `GateResult` (with `baseline_written` set in update mode).
        """
        from edgemed.measure import GateConfig, check_bundle

        cfg = config or GateConfig()
        if self.fast:
            cfg = cfg.with_fast()
        result = check_bundle(bundle, baseline, scan=scan, reference=reference, config=cfg,
                              update_baseline=self.update)
        self.results.append(result)
        if self._record is not None:
            self._record(f"edgemed_gate[{result.bundle}]", json.dumps(
                {"passed": result.passed, "verdict": result.verdict, "baseline_written": result.baseline_written,
                 "failures": [c.name for c in result.failures],
                 "checks": {c.name: {"status": c.status, "change": c.change} for c in result.checks}}))
        if result.inconclusive:  # the machine was too busy to judge latency: neither pass nor fail
            pytest.skip(result.table())
        if not result.passed:
            pytest.fail(result.table(), pytrace=False)
        return result


def pytest_addoption(parser: pytest.Parser) -> None:
    """`--edgemed-update-baseline` and `--edgemed-fast`."""
    group = parser.getgroup("edgemed", "edgemed regression gate")
    group.addoption("--edgemed-update-baseline", action="store_true", default=False,
                    help="edgemed_gate writes each baseline instead of comparing with it.")
    group.addoption("--edgemed-fast", action="store_true", default=False,
                    help="edgemed_gate times fewer repeats (a smoke run).")


@pytest.fixture
def edgemed_gate(request: pytest.FixtureRequest, record_property: Callable[[str, object], None]) -> EdgemedGate:
    """Gate a bundle against a stored baseline: `edgemed_gate(bundle, baseline, scan=..., reference=...)`."""
    return EdgemedGate(update=bool(request.config.getoption("--edgemed-update-baseline")),
                       fast=bool(request.config.getoption("--edgemed-fast")), record=record_property)
