"""edgemed.profiles: measure a bundle on this host — stage times, batch latency, FLOPs, accuracy (NO torch).

`profile_bundle` runs a bundle on a scan through `edgemed.runtime` and writes report.json,
report.md and overlay.png; `count_flops` counts an ONNX graph's FLOPs from its shapes.
matplotlib and onnx are imported only by the functions that need them.

Example:
    >>> from edgemed.profiles import profile_bundle
    >>> report = profile_bundle("out/liver.edgemed", "ct.nii.gz", teacher_predictions="seg.nii.gz",
    ...                         out_dir="out/profile")
    >>> report.stages["inference"].p50_ms, report.model.peak_percent
"""

from __future__ import annotations

from edgemed.profiles._flops import COUNTED_OPS, FlopCount, count_flops, count_parameters
from edgemed.profiles._measure import (Percentiles, host_facts, peak_conv_gops, peak_matmul_gflops, peak_rss_bytes,
                                       time_interleaved)
from edgemed.profiles._predict import (DEFAULT_CALIBRATIONS, Calibration, GraphCost, LatencyPrediction,
                                       fit_calibration, graph_cost, load_calibration, predict_bundle,
                                       predict_latency)
from edgemed.profiles._report import profile_bundle
from edgemed.profiles._targets import (BUILTIN_TARGETS, Accelerator, Precision, TargetProfile, get_profile,
                                       list_profiles, load_profiles_toml)
from edgemed.profiles._types import (STAGES, BatchLatency, ModelFacts, OrganAccuracy, ProfileConfig,
                                     ProfileReport)

__all__ = [
    "BUILTIN_TARGETS",
    "COUNTED_OPS",
    "DEFAULT_CALIBRATIONS",
    "Accelerator",
    "Calibration",
    "GraphCost",
    "LatencyPrediction",
    "Precision",
    "TargetProfile",
    "fit_calibration",
    "get_profile",
    "graph_cost",
    "list_profiles",
    "load_calibration",
    "load_profiles_toml",
    "predict_bundle",
    "predict_latency",
    "STAGES",
    "BatchLatency",
    "FlopCount",
    "ModelFacts",
    "OrganAccuracy",
    "Percentiles",
    "ProfileConfig",
    "ProfileReport",
    "count_flops",
    "count_parameters",
    "host_facts",
    "peak_conv_gops",
    "peak_matmul_gflops",
    "peak_rss_bytes",
    "profile_bundle",
    "time_interleaved",
]
