"""`check_bundle`: the regression gate end to end — read the baseline, measure alike, compare (or re-baseline)."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgemed.measure._baseline import load_baseline, save_baseline
from edgemed.measure._compare import GateResult, check_compatible, compare
from edgemed.measure._gate_config import GateConfig
from edgemed.measure._gate_measure import measure, read_inputs
from edgemed.measure._gate_types import BundleIdentity
from edgemed.errors import CompatibilityError

__all__ = ["check_bundle"]

PathLike = str | os.PathLike[str]


def check_bundle(bundle: Any, baseline: PathLike, *, scan: PathLike | None = None, reference: PathLike | None = None,
                 config: GateConfig = GateConfig(), update_baseline: bool = False) -> GateResult:
    """Gate a bundle on latency, memory and Dice against a stored baseline (or write that baseline).

    Checking measures the bundle exactly as the baseline was measured — same backend, thread
    count and reference workload, which the baseline records — so only the model differs; then
    `compare` judges it. Incompatible baselines (another task, scan, backend or thread count) are
    refused before any timing. With `update_baseline`, the bundle is measured with a freshly sized
    reference workload and the baseline file is (re)written atomically; nothing is compared.

    Args:
        bundle: The candidate bundle directory (or opened bundle).
        baseline: The baseline JSON file.
        scan: The scan to segment; None: the built-in CT phantom (whose labels are the reference).
        reference: A reference label map of `scan` for Dice.
        config: Repeats, tolerances, confidence. Backend, threads and clock left at their defaults
            follow the baseline; a backend or thread count other than the baseline's is refused.
        update_baseline: Measure and write `baseline` instead of comparing.

    Returns:
        The verdict; `result.passed` is False when a metric regressed beyond its limit.

    Raises:
        InputError: No baseline file (says to run with --update-baseline), or a bad scan/reference.
        ArtifactError: A damaged baseline or bundle.
        CompatibilityError: The baseline belongs to another task, scan, backend or thread count.

    Example:
        >>> result = check_bundle("out/liver.edgemed", "ci/liver.baseline.json", scan="ct.nii.gz",
        ...                       reference="seg.nii.gz")
        >>> print(result.table()); assert result.passed
    """
    from edgemed.runtime import OnnxBundle, open_bundle

    path = Path(baseline)
    opened = open_bundle(bundle.path if isinstance(bundle, OnnxBundle) else bundle)
    identity = BundleIdentity.of(opened)
    if update_baseline:
        measurement = measure(opened, scan=scan, reference=reference, config=config)
        save_baseline(measurement, path)
        return GateResult(bundle=identity.name, baseline_path=str(path), checks=(), candidate=measurement,
                          baseline_written=True)
    base = load_baseline(path, bundle=opened.path)
    asked = _explicit(config)
    check_compatible(identity, base, backend=config.backend, threads=config.threads if "threads" in asked else None,
                     baseline_path=str(path))
    inputs = read_inputs(scan, reference, identity.modality)
    if inputs.scan.sha256 != base.scan.sha256:
        raise CompatibilityError(
            f"{path} was measured on scan {base.scan.source} ({base.scan.sha256[:12]}…), this run on "
            f"{inputs.scan.source} ({inputs.scan.sha256[:12]}…). Pass the baseline's scan with --scan, or re-create "
            "the baseline with --update-baseline.")
    alike = replace(config, backend=base.backend, threads=base.threads,
                    clock=config.clock if "clock" in asked else base.clock)
    measurement = measure(opened, scan=inputs, config=alike, workload=base.workload)
    return compare(measurement, base, config, baseline_path=str(path))


def _explicit(config: GateConfig) -> set[str]:
    """Fields of `config` that differ from the defaults (what the caller asked for explicitly)."""
    default = GateConfig()
    return {name for name in ("backend", "threads", "clock") if getattr(config, name) != getattr(default, name)}
