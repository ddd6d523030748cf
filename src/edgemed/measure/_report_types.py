"""The profile's config and its records: stage times, batch latency, accuracy, model facts (stdlib + numpy)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgemed.errors import ConfigError
from edgemed.measure._timing import Percentiles

__all__ = ["STAGES", "BatchLatency", "ModelFacts", "OrganAccuracy", "ProfileConfig", "ProfileReport"]

STAGES = ("read", "preprocess", "inference", "postprocess", "write")
_BACKENDS = ("auto", "ort", "openvino", "trt")


@dataclass(frozen=True, kw_only=True)
class ProfileConfig:
    """How to profile a bundle.

    Attributes:
        backend: "auto", "ort", "openvino" or "trt" (TensorRT engine bundles).
        repeats: Timed whole-volume runs (and timed calls per batch size).
        warmup: Untimed runs before them.
        batch_sizes: Slices per backend call for the per-batch latency (a fixed-batch model uses its own).
        threads: Backend threads; None: the physical cores.
    """

    backend: str = "auto"
    repeats: int = 10
    warmup: int = 2
    batch_sizes: tuple[int, ...] = (1, 8, 16)
    threads: int | None = None

    def __post_init__(self) -> None:
        if self.backend not in _BACKENDS:
            raise ConfigError(f"backend={self.backend!r} is unknown; use one of {list(_BACKENDS)}.")
        if _not_int(self.repeats) or self.repeats < 1:
            raise ConfigError(f"repeats={self.repeats!r} must be an integer >= 1; use 10 for stable percentiles.")
        if _not_int(self.warmup) or self.warmup < 0:
            raise ConfigError(f"warmup={self.warmup!r} must be an integer >= 0, e.g. 2.")
        sizes = tuple(self.batch_sizes)
        if not sizes or any(_not_int(b) or b < 1 for b in sizes):
            raise ConfigError(f"batch_sizes={self.batch_sizes!r} must be integers >= 1, e.g. (1, 8, 16).")
        object.__setattr__(self, "batch_sizes", tuple(sorted(set(int(b) for b in sizes))))
        if self.threads is not None and (_not_int(self.threads) or self.threads < 1):
            raise ConfigError(f"threads={self.threads!r} must be an integer >= 1, or None for the physical cores.")

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"backend": self.backend, "repeats": self.repeats, "warmup": self.warmup,
                "batch_sizes": list(self.batch_sizes), "threads": self.threads}


@dataclass(frozen=True)
class BatchLatency:
    """Latency of raw `session.run` calls on random inputs of one batch size.

    Attributes:
        batch_size: Slices per call.
        latency: Per-call times.
        slices_per_s: batch_size / median call time.
    """

    batch_size: int
    latency: Percentiles
    slices_per_s: float

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"batch_size": self.batch_size, **self.latency.to_json(), "slices_per_s": round(self.slices_per_s, 2)}


@dataclass(frozen=True)
class OrganAccuracy:
    """Agreement of the student's mask with a reference for one organ.

    Attributes:
        organ: Organ name, e.g. "liver".
        label_id: Its id in the label map (5 = liver in TotalSegmentator).
        reference: "teacher" or "ground_truth".
        dice: Dice in [0, 1].
        hd95_mm: 95th-percentile Hausdorff distance in mm (inf when exactly one mask is empty).
        reference_label_id: The id the organ has in the reference map (differs from `label_id`
            when mapped with `--reference-label`).
        scope: What the Dice covers: "whole scan" (the profiled scan, which the student may have
            been trained on), unlike the held-out Dice recorded at distillation.
    """

    organ: str
    label_id: int
    reference: str
    dice: float
    hd95_mm: float
    reference_label_id: int | None = None
    scope: str = "whole scan"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (an infinite HD95 becomes null)."""
        return {"organ": self.organ, "label_id": self.label_id, "reference": self.reference,
                "dice": round(self.dice, 6), "hd95_mm": None if math.isinf(self.hd95_mm) else round(self.hd95_mm, 3),
                "reference_label_id": self.label_id if self.reference_label_id is None else self.reference_label_id,
                "scope": self.scope}


@dataclass(frozen=True)
class ModelFacts:
    """Size and arithmetic of the model, and how close the run came to the host's ceiling.

    Attributes:
        size_bytes: The model file's size.
        parameters: Summed initializer sizes (None without the onnx package).
        flops_per_slice: 2 x MACs of Conv/ConvTranspose/MatMul/Gemm for one slice at the scan's
            student-grid size (None without onnx).
        flops_per_volume: flops_per_slice x slices.
        achieved_gflops: flops_per_volume / median inference time.
        peak_gflops: The host's measured ceiling: the best float32 numpy matmul rate, or for an
            INT8 model the best INT8 conv rate on the backend that ran it (GOP/s).
        peak_percent: achieved / peak x 100.
        input_shape: The concrete per-slice input shape counted, e.g. (1, 3, 48, 40).
        flops_by_op: FLOPs per slice by operator type.
        peak_kind: What `peak_gflops` measured, e.g. "fp32 numpy matmul".
    """

    size_bytes: int
    parameters: int | None
    flops_per_slice: int | None
    flops_per_volume: int | None
    achieved_gflops: float | None
    peak_gflops: float
    peak_percent: float | None
    input_shape: tuple[int, ...]
    flops_by_op: Mapping[str, int] = field(default_factory=dict)
    peak_kind: str = "fp32 numpy matmul"

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        rnd = lambda v, n: None if v is None else round(v, n)  # noqa: E731
        return {"size_bytes": self.size_bytes, "parameters": self.parameters, "flops_per_slice": self.flops_per_slice,
                "flops_per_volume": self.flops_per_volume, "achieved_gflops": rnd(self.achieved_gflops, 3),
                "peak_gflops": round(self.peak_gflops, 3), "peak_kind": self.peak_kind,
                "peak_percent": rnd(self.peak_percent, 3),
                "input_shape": list(self.input_shape), "flops_by_op": dict(self.flops_by_op)}


@dataclass(frozen=True)
class ProfileReport:
    """Everything `profile_bundle` measured, and where it wrote it.

    Attributes:
        bundle: The bundle directory.
        scan: The scan profiled, by its de-identified name (`Volume.source`), not its full path.
        backend: The backend used ("ort" or "openvino").
        config: The profiling config.
        slices: Axial slices in the scan (one model input each).
        stages: Whole-volume time per stage ("read", "preprocess", "inference", "postprocess",
            "write", and "total" = their sum per repeat).
        batches: Raw per-batch latency, one per batch size.
        memory: {"peak_rss_before_bytes", "peak_rss_after_bytes", "kind"}.
        model: Size, parameters, FLOPs and achieved vs peak FLOP/s.
        accuracy: Dice and HD95 per organ vs the teacher and/or ground truth.
        host: CPU, cores, platform, versions.
        notes: What was skipped and why.
        report_json: Path of report.json.
        report_md: Path of report.md.
        overlay_png: Path of overlay.png (None when matplotlib is missing).
        mask: The student's mask written during the "write" stage.
        heldout_dice: The Dice recorded at distillation on the held-out part.
        qc: The runtime quality control of the profiled scan: {"report": `QCReport.to_json()` of the
            last repeat, "qc_ms_p50", "share_of_segment_p50" (QC time / `segment` time, median)}.
    """

    bundle: Path
    scan: Path
    backend: str
    config: ProfileConfig
    slices: int
    stages: Mapping[str, Percentiles]
    batches: tuple[BatchLatency, ...]
    memory: Mapping[str, Any]
    model: ModelFacts
    accuracy: tuple[OrganAccuracy, ...]
    host: Mapping[str, Any]
    notes: tuple[str, ...]
    report_json: Path
    report_md: Path
    overlay_png: Path | None
    mask: Path
    heldout_dice: Mapping[str, float] = field(default_factory=dict)
    qc: Mapping[str, Any] = field(default_factory=dict)

    @property
    def inference_share(self) -> float:
        """Median inference time as a fraction of the median whole-volume time (read to write)."""
        total = self.stages["total"].p50_ms
        return self.stages["inference"].p50_ms / total if total > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: what report.json holds."""
        return {
            "bundle": str(self.bundle), "scan": str(self.scan), "backend": self.backend,
            "config": self.config.to_json(), "slices": self.slices,
            "stages": {k: v.to_json() for k, v in self.stages.items()},
            "inference_share": round(self.inference_share, 4),
            "batches": [b.to_json() for b in self.batches], "memory": dict(self.memory),
            "model": self.model.to_json(), "accuracy": [a.to_json() for a in self.accuracy],
            "host": dict(self.host), "notes": list(self.notes),
            "heldout_dice": {"scope": "held-out (recorded at distillation, vs the teacher)",
                             "dice": dict(self.heldout_dice)},
            "qc": dict(self.qc),
            "files": {"report_json": str(self.report_json), "report_md": str(self.report_md),
                      "overlay_png": None if self.overlay_png is None else str(self.overlay_png),
                      "mask": str(self.mask)},
        }


def _not_int(value: object) -> bool:
    return isinstance(value, bool) or not isinstance(value, int)
