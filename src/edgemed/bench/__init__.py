"""edgemed.bench: the CI gate's former home, kept so existing imports work; use `edgemed.measure`.

Every name here is `edgemed.measure`'s own object (no copies).
"""

from __future__ import annotations

from edgemed.measure import (BASELINE_KIND, BASELINE_SCHEMA, CLOCKS, FAST, PHANTOM_SOURCE, WORKLOADS, BundleIdentity,
                             GateConfig, GateInputs, GateResult, Measurement, MetricCheck, RatioEstimate, ScanIdentity,
                             WorkloadSpec, bootstrap_ratio, check_bundle, check_compatible, compare, conv_model_bytes,
                             junit_xml, load_baseline, make_biased_bundle, make_slower_bundle, measure, normalise,
                             read_inputs, save_baseline, write_junit_xml)

__all__ = [
    "BASELINE_KIND", "BASELINE_SCHEMA", "CLOCKS", "FAST", "PHANTOM_SOURCE", "WORKLOADS", "BundleIdentity", "GateConfig",
    "GateInputs", "GateResult", "Measurement", "MetricCheck", "RatioEstimate", "ScanIdentity", "WorkloadSpec",
    "bootstrap_ratio", "check_bundle", "check_compatible", "compare", "conv_model_bytes", "junit_xml", "load_baseline",
    "make_biased_bundle", "make_slower_bundle", "measure", "normalise", "read_inputs", "save_baseline",
    "write_junit_xml",
]
