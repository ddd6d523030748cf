"""`profile_bundle`: time every stage of a bundle on a scan, count its FLOPs, measure its accuracy; write a report."""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgemed._atomic import atomic_dir, atomic_file
from edgemed.measure._timing import Percentiles, host_facts, peak_conv_gops, peak_matmul_gflops, peak_rss_bytes
from edgemed.measure._report_types import (STAGES, BatchLatency, ModelFacts, OrganAccuracy, ProfileConfig,
                                     ProfileReport)

__all__ = ["PROFILE_FILES", "profile_bundle"]

PathLike = str | os.PathLike[str]
# What a profile's --out folder holds; a folder holding only these is a profile (replaced with --overwrite).
PROFILE_FILES = ("report.json", "report.md", "overlay.png", "mask.nii.gz")


def profile_bundle(bundle: Any, scan: PathLike, *, teacher_predictions: PathLike | None = None,
                   ground_truth: PathLike | None = None, backend: str = "auto", repeats: int = 10, warmup: int = 2,
                   batch_sizes: Sequence[int] = (1, 8, 16), threads: int | None = None,
                   out_dir: PathLike, overwrite: bool = False,
                   reference_labels: Mapping[str, int] | None = None) -> ProfileReport:
    """Profile a bundle on one scan: stage times, per-batch latency, memory, FLOPs, accuracy.

    Each of `warmup` + `repeats` runs reads the scan, segments it and writes the mask, timing
    read / preprocess / inference / postprocess / write with `time.perf_counter_ns`; raw
    `session.run` calls on random inputs of the scan's student-grid size then time each batch size.

    Args:
        bundle: A bundle directory (from `edgemed.export.to_onnx`) or an opened `OnnxBundle`.
        scan: The CT/MR scan (NIfTI, NRRD or DICOM series folder).
        teacher_predictions: The teacher's label map of `scan` (on its grid), for Dice/HD95 vs teacher.
        ground_truth: A reference label map of `scan` (on its grid), for Dice/HD95 vs ground truth.
        backend: "auto", "ort" or "openvino".
        repeats: Timed runs per stage and per batch size.
        warmup: Untimed runs before them.
        batch_sizes: Slices per call for the per-batch latency.
        threads: Backend threads; None: the physical cores.
        out_dir: Where report.json, report.md, overlay.png and mask.nii.gz go (created; all of them
            appear together when the profile finishes, or none).
        overwrite: Replace an earlier profile in `out_dir`; any other folder there is refused.
        reference_labels: Organ name → its label id in the reference maps, where they use other ids
            than the bundle (a DICOM-SEG numbers its segments 1..). A reference without a voxel of
            an organ's id gets a warning: its Dice would be 0 for a reason unrelated to the model.

    Returns:
        The report (also written to `out_dir/report.json` and `out_dir/report.md`).

    Raises:
        ConfigError: A bad backend, repeats, warmup, batch size or thread count.
        InputError: The scan or a label map is missing or unreadable, or a label map is not on the scan's grid.
        ArtifactError: Not a bundle, or a bundle file is altered.
        MissingDependencyError: The backend is not installed.
        OutputError: `out_dir` holds something else (or a profile, without `overwrite`), or the disk refused.

    Example:
        >>> report = profile_bundle("out/liver.edgemed", "ct.nii.gz", teacher_predictions="seg.nii.gz",
        ...                         out_dir="out/profile")
        >>> report.stages["inference"].p50_ms, report.accuracy[0].dice
    """
    from edgemed.artifacts import check_output

    out = Path(out_dir)
    check_output(out, kind="profile", overwrite=overwrite, layout=PROFILE_FILES,
                 inputs=[getattr(bundle, "path", bundle), scan, teacher_predictions, ground_truth])
    with atomic_dir(out) as stage:
        return _profile_into(stage, out, bundle, scan, teacher_predictions, ground_truth, backend, repeats, warmup,
                             batch_sizes, threads, dict(reference_labels or {}))


def _profile_into(stage: Path, out: Path, bundle: Any, scan: PathLike, teacher_predictions: PathLike | None,
                  ground_truth: PathLike | None, backend: str, repeats: int, warmup: int, batch_sizes: Sequence[int],
                  threads: int | None, reference_labels: dict[str, int]) -> ProfileReport:
    """`profile_bundle`'s work: files are written in `stage`; the report names them in `out`, where they end up."""
    from edgemed import runtime
    from edgemed.io import read_labels, read_volume, student_grid_geometry, write_nifti

    config = ProfileConfig(backend=backend, repeats=repeats, warmup=warmup, batch_sizes=tuple(batch_sizes),
                           threads=threads)
    scan_path = Path(scan)
    rss_before = peak_rss_bytes()
    volume = read_volume(scan_path)
    # Label maps are checked before any timing: a map on another grid fails in seconds, not minutes.
    references = []
    if teacher_predictions is not None:
        references.append(("teacher", read_labels(teacher_predictions, like=volume)))
    if ground_truth is not None:
        references.append(("ground_truth", read_labels(ground_truth, like=volume)))
    mask_path = stage / "mask.nii.gz"
    notes: list[str] = []
    samples: dict[str, list[int]] = {s: [] for s in (*STAGES, "total")}
    qc_ms: list[float] = []
    qc_share: list[float] = []
    with runtime.load(bundle, backend=config.backend, threads=config.threads) as seg:
        for i in range(config.warmup + config.repeats):
            t0 = time.perf_counter_ns()
            vol = read_volume(scan_path)
            t1 = time.perf_counter_ns()
            mask = seg.segment(vol)
            t2 = time.perf_counter_ns()
            write_nifti(mask, mask_path)
            t3 = time.perf_counter_ns()
            if i < config.warmup:
                continue
            tm = seg.last_timings
            assert tm is not None  # segment() just finished
            row = {"read": t1 - t0, "preprocess": int(tm.preprocess_ms * 1e6), "inference": int(tm.inference_ms * 1e6),
                   "postprocess": int(tm.postprocess_ms * 1e6), "write": t3 - t2}
            for name, ns in row.items():
                samples[name].append(ns)
            qc_ms.append(tm.qc_ms)
            qc_share.append(tm.qc_ms / tm.total_ms if tm.total_ms > 0 else 0.0)
            samples["total"].append((t1 - t0) + (t2 - t1) + (t3 - t2))
        slices = int(seg.last_timings.slices) if seg.last_timings else int(volume.shape[2])
        stages = {name: Percentiles.of_ns(v) for name, v in samples.items()}
        geom = student_grid_geometry(volume, seg.bundle.preprocess)
        spec = seg.bundle.inputs[0]
        channels = int(seg.bundle.preprocess.in_channels)
        fixed_batch = spec.shape[0] if isinstance(spec.shape[0], int) else None
        batches = _batch_latency(seg.session, spec.name, (channels, *geom.padded_hw), config, fixed_batch, notes)
        organs = seg.organs
        backend_name = seg.backend
        model_path = seg.bundle.model_path
        bundle_path = seg.bundle.path
        precision = seg.bundle.precision
        heldout = seg.bundle.meta.student.validation_dice
        last_qc = seg.last_qc
    qc = {} if last_qc is None else {"report": last_qc.to_json(), "qc_ms_p50": float(np.median(qc_ms)),
                                     "share_of_segment_p50": float(np.median(qc_share))}
    unknown = sorted(set(reference_labels) - {o.name for o in organs})
    if unknown:
        from edgemed.errors import ConfigError

        raise ConfigError(f"reference label(s) given for {', '.join(unknown)}, which the bundle does not segment "
                          f"(it segments {', '.join(o.name for o in organs)}).")
    model = _model_facts(model_path, spec.name, (channels, *geom.padded_hw), fixed_batch, slices,
                         stages["inference"].p50_ms, notes, precision=precision, backend=backend_name)
    accuracy = _accuracy(mask.array, references, organs, volume.spacing_mm, reference_labels, notes)
    host = {**host_facts(), "backend": backend_name,
            "threads": config.threads if config.threads is not None else runtime.physical_cores()}
    memory = {"kind": "peak RSS of the whole process (getrusage ru_maxrss high-water mark, includes the interpreter "
                      "and libraries loaded before profiling)",
              "peak_rss_before_bytes": rss_before, "peak_rss_after_bytes": peak_rss_bytes()}
    overlay = _overlay(volume, mask.array, references, organs, accuracy, stage / "overlay.png", notes)
    # The scan by its de-identified name (a DICOM export's folder is often named after the patient).
    report = ProfileReport(bundle=bundle_path, scan=Path(volume.source or scan_path.name), backend=backend_name, config=config, slices=slices,
                           stages=stages, batches=batches, memory=memory, model=model, accuracy=accuracy, host=host,
                           notes=tuple(notes), report_json=out / "report.json", report_md=out / "report.md",
                           overlay_png=None if overlay is None else out / overlay.name, mask=out / mask_path.name,
                           heldout_dice=dict(heldout), qc=qc)
    from edgemed.measure._markdown import render_markdown

    _write_text(stage / report.report_json.name, json.dumps(report.to_json(), indent=2) + "\n")
    _write_text(stage / report.report_md.name, render_markdown(report))
    return report


def _batch_latency(session: Any, name: str, slice_shape: tuple[int, ...], config: ProfileConfig,
                   fixed_batch: int | None, notes: list[str]) -> tuple[BatchLatency, ...]:
    sizes = config.batch_sizes
    if fixed_batch is not None:
        if set(sizes) != {fixed_batch}:
            notes.append(f"the model's batch is fixed at {fixed_batch}; batch sizes {list(sizes)} were replaced by it.")
        sizes = (fixed_batch,)
    rng = np.random.default_rng(0)
    results = []
    for b in sizes:
        # Prepared slices lie in [0, 1] (0 = air / padding): uniform noise there is a valid input.
        feed = {name: rng.random((b, *slice_shape), dtype=np.float32)}
        for _ in range(config.warmup):
            session.run(feed)
        times = []
        for _ in range(config.repeats):
            t0 = time.perf_counter_ns()
            session.run(feed)
            times.append(time.perf_counter_ns() - t0)
        lat = Percentiles.of_ns(times)
        results.append(BatchLatency(batch_size=b, latency=lat, slices_per_s=b / max(lat.p50_ms / 1e3, 1e-12)))
    return tuple(results)


def _model_facts(model_path: Path, input_name: str, slice_shape: tuple[int, ...], fixed_batch: int | None,
                 slices: int, inference_p50_ms: float, notes: list[str], *, precision: str = "fp32",
                 backend: str = "ort") -> ModelFacts:
    batch = fixed_batch or 1
    shape = (batch, *slice_shape)
    params = flops_slice = None
    by_op: dict[str, int] = {}
    try:
        import onnx  # noqa: F401
    except ImportError:
        notes.append("the onnx package is not installed: parameters and FLOPs were skipped (pip install 'edgemed[compress]').")
    else:
        if model_path.suffix != ".onnx":  # a TensorRT plan: count on the ONNX bundle it was built from
            notes.append(f"{model_path.name} is not an ONNX graph: parameters and FLOPs were skipped; profile the "
                         "ONNX bundle the engine was built from for them.")
            return _facts(model_path, None, None, {}, slices, shape, inference_p50_ms, precision, backend, notes)
        from edgemed.measure._flops import count_flops, count_parameters

        params = count_parameters(model_path)
        count = count_flops(model_path, {input_name: shape})
        flops_slice = count.flops // batch
        by_op = {k: v // batch for k, v in count.by_op.items()}
        if count.uncounted_nodes:
            notes.append(f"{len(count.uncounted_nodes)} Conv/MatMul nodes had no inferred shapes and were not "
                         f"counted: {list(count.uncounted_nodes)[:5]}")
    return _facts(model_path, params, flops_slice, by_op, slices, shape, inference_p50_ms, precision, backend, notes)


def _facts(model_path: Path, params: int | None, flops_slice: int | None, by_op: dict[str, int], slices: int,
           shape: tuple[int, ...], inference_p50_ms: float, precision: str, backend: str,
           notes: list[str]) -> ModelFacts:
    peak, peak_kind = peak_matmul_gflops(), "fp32 numpy matmul"
    if precision == "int8":  # INT8 kernels have their own, higher ceiling: measure it on the backend that ran
        try:
            peak, peak_kind = peak_conv_gops(backend, "int8"), f"int8 3x3 conv on {backend}"
        except Exception as err:  # noqa: BLE001  no onnx package or a backend that cannot run the probe
            notes.append(f"the INT8 peak could not be measured on {backend} ({err}); compared with the fp32 peak.")
    flops_volume = None if flops_slice is None else flops_slice * slices
    achieved = None
    if flops_volume is not None and inference_p50_ms > 0:
        achieved = flops_volume / (inference_p50_ms / 1e3) / 1e9
    return ModelFacts(size_bytes=model_path.stat().st_size, parameters=params, flops_per_slice=flops_slice,
                      flops_per_volume=flops_volume, achieved_gflops=achieved, peak_gflops=peak, peak_kind=peak_kind,
                      peak_percent=None if achieved is None else 100.0 * achieved / peak,
                      input_shape=(1, *shape[1:]), flops_by_op=by_op)


def _accuracy(pred: np.ndarray, references: list[tuple[str, Any]], organs: Sequence[Any],
              spacing_mm: Sequence[float], reference_labels: Mapping[str, int],
              notes: list[str]) -> tuple[OrganAccuracy, ...]:
    from edgemed.errors import EdgemedWarning
    from edgemed.metrics import dice, hd95_mm

    rows = []
    for ref_name, ref in references:
        for organ in organs:
            ref_id = int(reference_labels.get(organ.name, organ.label_id))
            a, b = pred == organ.label_id, ref.array == ref_id
            if not b.any():
                present = [int(v) for v in np.unique(ref.array) if v != 0][:10]
                message = (f"the {ref_name.replace('_', ' ')} holds no voxel of label {ref_id} ({organ.name}), so its "
                           f"Dice says nothing about the model; it holds labels {present or 'none'}. If one of them is "
                           f"{organ.name}, map it: --reference-label {organ.name}=ID")
                warnings.warn(message, EdgemedWarning, stacklevel=4)
                notes.append(message)
            rows.append(OrganAccuracy(organ=organ.name, label_id=int(organ.label_id), reference=ref_name,
                                      dice=float(dice(a, b)), hd95_mm=float(hd95_mm(a, b, spacing_mm)),
                                      reference_label_id=ref_id))
    return tuple(rows)


def _overlay(volume: Any, pred: np.ndarray, references: list[tuple[str, Any]], organs: Sequence[Any],
             accuracy: tuple[OrganAccuracy, ...], path: Path, notes: list[str]) -> Path | None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        notes.append("matplotlib is not installed: overlay.png was skipped (pip install 'edgemed[report]').")
        return None
    from edgemed.measure._overlay import draw_overlay

    ids = [o.label_id for o in organs]
    ref_name, ref = references[0] if references else ("", None)
    dices = ", ".join(f"{a.organ} {a.dice:.3f}" for a in accuracy if a.reference == ref_name)
    title = f"student vs {ref_name.replace('_', ' ')}: Dice {dices}" if ref is not None else "student mask"
    return draw_overlay(volume.array, volume.spacing_mm, np.isin(pred, ids),
                        None if ref is None else np.isin(ref.array, ids), path, title=title,
                        reference_name=ref_name.replace("_", " ") or "reference")


def _write_text(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
