"""edgemed.runtime: load a bundle and segment volumes on ONNX Runtime, OpenVINO or TensorRT (numpy only; NO torch).

Device software embeds this package alone: it reads the bundle's manifest (verifying every
file's sha256), applies exactly the preprocessing the student was trained with, runs the model
slice-batch by slice-batch on a backend and maps the result back to the scan's own grid.

Example:
    >>> from edgemed.io import read_volume
    >>> from edgemed.runtime import load
    >>> with load("out/liver.edgemed", backend="ort") as seg:
    ...     labels = seg.segment(read_volume("ct.nii.gz"))     # uint8; 5 = liver (TotalSegmentator ids)
    ...     print(seg.last_timings)
"""

from __future__ import annotations

from edgemed.artifacts import BUNDLE_KIND, BUNDLE_SCHEMA, ENGINE_KIND, EngineBundle, OnnxBundle, TensorSpec, open_bundle
from edgemed.runtime._host import physical_cores
from edgemed.runtime._infer import infer_slices, infer_volume, iter_slice_batches
from edgemed.runtime._postprocess import component_labels, largest_component
from edgemed.runtime._segmenter import Segmenter, load
from edgemed.runtime._types import Session, StageTimings
from edgemed.runtime.backends import BACKENDS, open_session

__all__ = [
    "BACKENDS",
    "BUNDLE_KIND",
    "BUNDLE_SCHEMA",
    "ENGINE_KIND",
    "EngineBundle",
    "OnnxBundle",
    "Segmenter",
    "Session",
    "StageTimings",
    "TensorSpec",
    "component_labels",
    "infer_slices",
    "infer_volume",
    "iter_slice_batches",
    "largest_component",
    "load",
    "open_bundle",
    "open_session",
    "physical_cores",
]
