"""edgemed.measure: every measurement edgemed makes, on top of the runtime (NO torch).

- **Profiling** (`profile_bundle`): a bundle on a scan — stage latency, batch latency, FLOP/s
  against this host's measured peaks, Dice/HD95 against a reference; report.json/.md + overlay.
- **Prediction** (`predict_bundle`, `predict_latency`, `graph_cost`): latency on a target not at
  hand, from the ONNX graph's FLOPs and bytes (roofline, calibrated on measured runs; calibrations
  ship as package data, `shipped_calibrations()`), always labelled "predicted".
- **The CI gate** (`check_bundle`, `measure`): latency timed in pairs with a fixed reference
  workload on the same backend and compared as normalised ratios bounded by a bootstrap, so a
  slower or busier CI machine does not fail it; Dice compared per organ. `edgemed measure check`
  and `edgemed measure bench` wrap it; `edgemed.testing` gives pytest suites the same gate.
- **Host facts** (`host_facts`, `get_target("host")`): this machine measured as a target profile.

Target data (Jetsons, GPUs, CPUs as profiles) lives in `edgemed.profiles`; this package measures.

Example:
    >>> from edgemed.measure import GateConfig, check_bundle, profile_bundle
    >>> report = profile_bundle("out/liver.edgemed", "ct.nii.gz", out_dir="out/profile")
    >>> check_bundle("out/liver.edgemed", "ci/liver.baseline.json", update_baseline=True)  # once, on main
    >>> result = check_bundle("out/liver.edgemed", "ci/liver.baseline.json", config=GateConfig(repeats=60))
    >>> result.passed
"""

from __future__ import annotations

from edgemed.measure._baseline import BASELINE_KIND, BASELINE_SCHEMA, load_baseline, save_baseline
from edgemed.measure._compare import GateResult, MetricCheck, check_compatible, compare
from edgemed.measure._flops import COUNTED_OPS, FlopCount, count_flops, count_parameters
from edgemed.measure._gate import check_bundle
from edgemed.measure._gate_config import CLOCKS, FAST, WORKLOADS, GateConfig
from edgemed.measure._gate_measure import PHANTOM_SOURCE, measure, read_inputs
from edgemed.measure._gate_types import BundleIdentity, GateInputs, Measurement, ScanIdentity
from edgemed.measure._host import get_target, host_profile, measure_memory_bandwidth_gbs
from edgemed.measure._junit import junit_xml, write_junit_xml
from edgemed.measure._overlay import draw_overlay
from edgemed.measure._predict import (CALIBRATIONS_DIR, DEFAULT_CALIBRATIONS, Calibration, GraphCost, LatencyPrediction,
                                      fit_calibration, graph_cost, load_calibration, predict_bundle, predict_latency,
                                      shipped_calibrations)
from edgemed.measure._profile import profile_bundle
from edgemed.measure._report_types import STAGES, BatchLatency, ModelFacts, OrganAccuracy, ProfileConfig, ProfileReport
from edgemed.measure._stats import RatioEstimate, bootstrap_ratio, normalise
from edgemed.measure._timing import (Percentiles, host_facts, peak_conv_gops, peak_matmul_gflops, peak_rss_bytes,
                                     time_interleaved)
from edgemed.measure._variants import make_biased_bundle, make_slower_bundle
from edgemed.measure._workload import WorkloadSpec, conv_model_bytes

__all__ = [
    "BASELINE_KIND",
    "BASELINE_SCHEMA",
    "CALIBRATIONS_DIR",
    "CLOCKS",
    "COUNTED_OPS",
    "DEFAULT_CALIBRATIONS",
    "FAST",
    "PHANTOM_SOURCE",
    "STAGES",
    "WORKLOADS",
    "BatchLatency",
    "BundleIdentity",
    "Calibration",
    "FlopCount",
    "GateConfig",
    "GateInputs",
    "GateResult",
    "GraphCost",
    "LatencyPrediction",
    "Measurement",
    "MetricCheck",
    "ModelFacts",
    "OrganAccuracy",
    "Percentiles",
    "ProfileConfig",
    "ProfileReport",
    "RatioEstimate",
    "ScanIdentity",
    "WorkloadSpec",
    "bootstrap_ratio",
    "check_bundle",
    "check_compatible",
    "compare",
    "conv_model_bytes",
    "count_flops",
    "count_parameters",
    "draw_overlay",
    "fit_calibration",
    "get_target",
    "graph_cost",
    "host_facts",
    "host_profile",
    "junit_xml",
    "load_baseline",
    "load_calibration",
    "make_biased_bundle",
    "make_slower_bundle",
    "measure",
    "measure_memory_bandwidth_gbs",
    "normalise",
    "peak_conv_gops",
    "peak_matmul_gflops",
    "peak_rss_bytes",
    "predict_bundle",
    "predict_latency",
    "profile_bundle",
    "read_inputs",
    "save_baseline",
    "shipped_calibrations",
    "time_interleaved",
    "write_junit_xml",
]
