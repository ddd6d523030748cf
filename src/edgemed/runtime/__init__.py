"""edgemed.runtime: load a bundle and segment volumes on ONNX Runtime, OpenVINO or TensorRT (numpy only; NO torch).

Device software embeds this package alone: it reads the bundle's manifest (verifying every
file's sha256), applies exactly the preprocessing the student was trained with, runs the model
slice-batch by slice-batch on a backend and maps the result back to the scan's own grid.

Example:
    >>> from edgemed.io import read_volume
    >>> from edgemed.runtime import load
    >>> with load("out/liver.edgemed", backend="ort") as seg:
    ...     labels, qc = seg.segment_with_qc(read_volume("ct.nii.gz"))  # uint8; 5 = liver (TotalSegmentator ids)
    ...     print(qc.verdict, qc.score, seg.last_timings)      # "ok"/"warn"/"fail", estimated Dice
"""

from __future__ import annotations

from edgemed.artifacts import BUNDLE_KIND, BUNDLE_SCHEMA, ENGINE_KIND, EngineBundle, OnnxBundle, TensorSpec, open_bundle
from edgemed.runtime._host import physical_cores
from edgemed.runtime._infer import infer_slices, infer_volume, iter_slice_batches
from edgemed.runtime._postprocess import component_labels, largest_component
from edgemed.runtime._qc import OrganQC, QCReason, QCReport, check_input, check_output, intensity_profile, organ_geometry
from edgemed.runtime._qc_score import (SCORE_FEATURES, ConfidenceStats, apply_score_model, fit_score_model,
                                       score_features, spearman)
from edgemed.runtime._segmenter import Segmenter, load
from edgemed.runtime._types import Session, StageTimings
from edgemed.runtime.backends import BACKENDS, open_session

__all__ = [
    "SCORE_FEATURES",
    "BACKENDS",
    "BUNDLE_KIND",
    "BUNDLE_SCHEMA",
    "ENGINE_KIND",
    "ConfidenceStats",
    "EngineBundle",
    "OnnxBundle",
    "OrganQC",
    "QCReason",
    "QCReport",
    "Segmenter",
    "Session",
    "StageTimings",
    "TensorSpec",
    "apply_score_model",
    "check_input",
    "check_output",
    "component_labels",
    "fit_score_model",
    "infer_slices",
    "infer_volume",
    "intensity_profile",
    "iter_slice_batches",
    "largest_component",
    "load",
    "open_bundle",
    "open_session",
    "organ_geometry",
    "physical_cores",
    "score_features",
    "spearman",
]
