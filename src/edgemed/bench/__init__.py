"""edgemed.bench: latency, memory and Dice regression gates that hold on noisy machines (NO torch).

`check_bundle` measures a bundle the way its stored baseline was measured and says whether it
regressed: latency is timed in pairs with a fixed reference workload on the same backend and
compared as normalised ratios, bounded by a bootstrap, so a slower or busier CI machine does not
fail the gate; a regression is declared only when the whole interval is beyond the tolerance.
Dice is deterministic and compared per organ. `edgemed check` and `edgemed bench` wrap this;
`edgemed.testing` gives pytest suites the same gate as a fixture.

Example:
    >>> from edgemed.bench import GateConfig, check_bundle
    >>> check_bundle("out/liver.edgemed", "ci/liver.baseline.json", update_baseline=True)  # once, on main
    >>> result = check_bundle("out/liver.edgemed", "ci/liver.baseline.json", config=GateConfig(repeats=60))
    >>> print(result.table())
    >>> result.passed
"""

from __future__ import annotations

from edgemed.bench._baseline import BASELINE_KIND, BASELINE_SCHEMA, load_baseline, save_baseline
from edgemed.bench._compare import GateResult, MetricCheck, check_compatible, compare
from edgemed.bench._config import CLOCKS, FAST, WORKLOADS, GateConfig
from edgemed.bench._gate import check_bundle
from edgemed.bench._junit import junit_xml, write_junit_xml
from edgemed.bench._measure import PHANTOM_SOURCE, measure, read_inputs
from edgemed.bench._stats import RatioEstimate, bootstrap_ratio, normalise
from edgemed.bench._types import BundleIdentity, GateInputs, Measurement, ScanIdentity
from edgemed.bench._variants import make_biased_bundle, make_slower_bundle
from edgemed.bench._workload import WorkloadSpec, conv_model_bytes

__all__ = [
    "BASELINE_KIND",
    "BASELINE_SCHEMA",
    "CLOCKS",
    "FAST",
    "PHANTOM_SOURCE",
    "WORKLOADS",
    "BundleIdentity",
    "GateConfig",
    "GateInputs",
    "GateResult",
    "Measurement",
    "MetricCheck",
    "RatioEstimate",
    "ScanIdentity",
    "WorkloadSpec",
    "bootstrap_ratio",
    "check_bundle",
    "check_compatible",
    "compare",
    "conv_model_bytes",
    "junit_xml",
    "load_baseline",
    "make_biased_bundle",
    "make_slower_bundle",
    "measure",
    "normalise",
    "read_inputs",
    "save_baseline",
    "write_junit_xml",
]
