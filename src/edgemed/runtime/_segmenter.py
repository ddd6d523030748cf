"""Volume in → mask out: a bundle's model run slice-batch by slice-batch on one backend."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgemed.artifacts import (EngineBundle, OnnxBundle, OrganChannel, QCRecord, open_bundle, read_payload,
                               verify_artifact)
from edgemed.errors import ArtifactError, BackendError, ConfigError, InputError
from edgemed.io import SliceGeometry, Volume, body_box, check_scan_values
from edgemed.runtime._infer import infer_volume
from edgemed.runtime._postprocess import keep_largest_components_, label_lut
from edgemed.runtime._qc import QCReport, check_input, check_output
from edgemed.runtime._qc_score import ConfidenceStats
from edgemed.runtime._types import Session, StageTimings
from edgemed.runtime.backends import open_session, resolve_backend

__all__ = ["Segmenter", "load"]


def load(bundle: str | os.PathLike[str] | OnnxBundle, *, backend: str = "auto", threads: int | None = None,
         throughput: bool = False, trusted_keys: Sequence[str | os.PathLike[str]] | None = None,
         require_signature: bool | None = None) -> "Segmenter":
    """Open a bundle for inference, checking the sha256 of every file (and its signature) first.

    Args:
        bundle: A bundle directory (from `edgemed.export.to_onnx`, or an engine bundle from
            `edgemed.export.build_engine`), or an opened `OnnxBundle` / `EngineBundle`.
        backend: "ort" (ONNX Runtime: CUDA when available, else CPU), "openvino", "trt" (engine
            bundles only; "auto" picks it for them), or "auto":
            the bundle's preferred backend when installed (`edgemed quantize` records the one its
            INT8 model was measured fastest on), else the first installed of "ort", "openvino".
        threads: CPU inference threads; None: the physical cores available to this process.
        throughput: Compile for many concurrent calls (several threads sharing this Segmenter)
            rather than for one call's latency; only OpenVINO distinguishes the two (its
            THROUGHPUT hint runs parallel streams, which one sequential caller cannot use).
        trusted_keys: ed25519 public key files or directories (`edgemed keygen`). When given, or
            when `EDGEMED_TRUSTED_KEYS` names some, the bundle must carry a valid signature by one
            of them (`edgemed sign`); device software should always set one of the two.
        require_signature: Override that rule: True refuses unsigned bundles even without keys
            (a ConfigError then), False skips the signature check (hashes are still checked).

    Returns:
        A `Segmenter`; use it as a context manager to release the backend when done.

    Raises:
        ArtifactError: Not a bundle; a file missing, altered or not in the manifest; unsigned
            when a signature is required, or a signature that is invalid or by an untrusted key.
        ConfigError: Unknown backend, bad thread count, or an unreadable trusted key.
        MissingDependencyError: The backend is not installed (names the pip extra).
        CompatibilityError: An engine built for another GPU or TensorRT version (names the rebuild command).
        BackendError: The backend cannot load the model.

    Example:
        >>> from edgemed.io import read_volume
        >>> with load("out/liver.edgemed", backend="ort") as seg:
        ...     mask = seg.segment(read_volume("ct.nii.gz"))     # uint8, 5 = liver (TotalSegmentator ids)
        ...     seg.last_timings.inference_ms
    """
    # An opened bundle is verified again: its files may have changed since it was opened. Every file
    # is read once: the manifest bytes whose signature is checked are the ones the bundle is built
    # from, and the model bytes whose sha256 is checked are the ones the backend deserializes, so a
    # file swapped on disk during the load is either refused or never used.
    path = bundle.path if isinstance(bundle, OnnxBundle) else bundle
    verified = verify_artifact(path, trusted_keys=trusted_keys, require_signature=require_signature)
    opened = open_bundle(path, verify=False, manifest=verified.manifest)
    if isinstance(opened, EngineBundle):
        if backend not in ("auto", "trt"):
            raise ConfigError(f"{opened.path} is a TensorRT engine; it runs only on backend='trt' (or 'auto'). "
                              "For ONNX Runtime or OpenVINO, load the ONNX bundle it was built from.")
        name = "trt"
    elif opened.format != "onnx":
        raise ArtifactError(f"{opened.path} holds a {opened.format!r} model; this runtime runs ONNX bundles.")
    else:
        preferred = opened.meta.preferred_backend
        name = resolve_backend(backend, prefer=None if preferred == "trt" else preferred)
        if name == "trt":
            raise ConfigError(f"backend 'trt' runs TensorRT engines, and {opened.path} is an ONNX bundle. Build an "
                              f"engine on the target first: edgemed build {opened.path} --target ID --out DIR")
    model = read_payload(opened.path, opened.manifest, opened.meta.model)
    engine_meta = opened.meta if isinstance(opened, EngineBundle) else None
    try:
        session = open_session(name, model, threads=threads, throughput=throughput, engine_meta=engine_meta)
    except BackendError as err:
        raise BackendError(f"{opened.path}: {err}") from err
    return Segmenter(opened, session, backend=name)


class Segmenter:
    """A loaded bundle: `segment` a CT/MR volume into an organ label map, or `predict` probabilities.

    Thread-safe: one Segmenter may serve several threads; each call keeps its own buffers.

    Attributes:
        bundle: The bundle it runs.
        session: The backend `Session` (for raw `run` calls on prepared slice stacks).
        backend: "ort", "openvino" or "trt".
    """

    def __init__(self, bundle: OnnxBundle, session: Session, *, backend: str) -> None:
        self.bundle = bundle
        self.session = session
        self.backend = backend
        self._spec = bundle.preprocess
        self._organs = bundle.organs
        self._largest_component = bundle.postprocess.largest_component
        self._input = bundle.inputs[0]
        self._output = bundle.outputs[0].name
        got = [s.name for s in session.inputs], [s.name for s in session.outputs]
        want = [self._input.name], [self._output]
        if got != want:
            raise ArtifactError(f"{bundle.path}: the model's inputs/outputs {got} differ from the manifest's "
                                f"{want}; the bundle is inconsistent — re-export it.")
        channels = self._input.shape[1] if len(self._input.shape) == 4 else None
        if channels != self._spec.in_channels:
            raise ArtifactError(f"{bundle.path}: the model takes input {self._input.shape}, but the preprocessing "
                                f"makes {self._spec.in_channels} channels; re-export the bundle.")
        classes = bundle.outputs[0].shape[1] if len(bundle.outputs[0].shape) == 4 else None
        if isinstance(classes, int) and classes != len(self._organs) + 1:
            raise ArtifactError(f"{bundle.path}: the model outputs {classes} classes but the manifest names "
                                f"{len(self._organs)} organs plus background; re-export the bundle.")
        batch = self._input.shape[0]
        self._fixed_batch = batch if isinstance(batch, int) else None
        self._lut = label_lut(self._organs)
        self._lock = threading.Lock()
        self._last: StageTimings | None = None
        self._last_qc: QCReport | None = None
        self._qc_record: QCRecord | None = bundle.meta.qc

    @property
    def organs(self) -> tuple[OrganChannel, ...]:
        """The organs it segments (channel, label_id, name)."""
        return self._organs

    @property
    def last_timings(self) -> StageTimings | None:
        """Per-stage times of the most recently finished `segment`/`predict` call (from any thread)."""
        with self._lock:
            return self._last

    @property
    def last_qc(self) -> QCReport | None:
        """The quality control of the most recently finished `segment` call (from any thread; None before one).

        With several threads sharing this Segmenter, use `segment_with_qc`, which returns each
        call's own report.
        """
        with self._lock:
            return self._last_qc

    @property
    def qc_record(self) -> QCRecord | None:
        """The QC reference ranges the bundle carries (None: not calibrated; QC then says so)."""
        return self._qc_record

    def predict(self, volume: Volume, *, batch_size: int = 16) -> np.ndarray:
        """Per-class probabilities on the volume's own grid.

        Args:
            volume: A 3D scan of the bundle's modality (CT in HU), e.g. from `edgemed.io.read_volume`.
            batch_size: Axial slices per backend call (a fixed-batch model uses its own size).

        Returns:
            (K, X, Y, Z) float32 softmax probabilities; channel 0 is background, channel
            `organ.channel` is `organ.name`.

        Raises:
            InputError: Not a 3D volume, empty, NaN/inf voxels, bad spacing or the wrong modality.
            ConfigError: batch_size < 1.
            BackendError: The backend failed.
        """
        probs, timings, start = self._predict(volume, batch_size)
        self._record(timings, start)
        return probs

    def segment(self, volume: Volume, *, batch_size: int = 16, qc: bool = True) -> Volume:
        """The organ label map of a volume, on the volume's own grid.

        Quality control runs with it (a few percent of the call's time) and its report is
        `last_qc`; `segment_with_qc` returns both at once.

        Args:
            volume: A 3D scan of the bundle's modality (CT in HU), e.g. from `edgemed.io.read_volume`.
            batch_size: Axial slices per backend call.
            qc: Run quality control (False: `last_qc` is left as it was).

        Returns:
            A "SEG" Volume with the input's affine holding label ids of the teacher's map
            (e.g. 5 for liver in TotalSegmentator), 0 elsewhere; uint8 (uint16 if an id > 255).

        Raises:
            InputError: Not a 3D volume, empty, NaN/inf voxels, bad spacing or the wrong modality.
            ConfigError: batch_size < 1.
            BackendError: The backend failed.

        Example:
            >>> labels = seg.segment(read_volume("ct.nii.gz"))
            >>> write_labels_like(labels, "ct.nii.gz", "liver_mask.nii.gz")
            >>> seg.last_qc.verdict, seg.last_qc.score     # "ok" / "warn" / "fail", estimated Dice
        """
        return self._segment(volume, batch_size, qc)[0]

    def segment_with_qc(self, volume: Volume, *, batch_size: int = 16) -> tuple[Volume, QCReport]:
        """`segment` plus its quality control: (label map, QCReport).

        The report's verdict is "ok", "warn" or "fail" with each reason in plain words, and a
        score per organ that estimates its Dice vs the teacher (fitted when the student was
        distilled). A bundle without QC reference ranges gives `calibrated=False` and only the
        checks that need no reference. What QC checks and what it cannot see: docs/runtime.md.

        Raises:
            As `segment`.

        Example:
            >>> mask, qc = seg.segment_with_qc(read_volume("ct.nii.gz"))
            >>> if qc.verdict == "fail":
            ...     print(qc.summary())          # e.g. "QC fail (est. Dice 0.41): liver lies on the patient's left…"
        """
        mask, report = self._segment(volume, batch_size, True)
        assert report is not None
        return mask, report

    def _segment(self, volume: Volume, batch_size: int, qc: bool) -> tuple[Volume, QCReport | None]:
        # Streamed: labels are written slab by slab; no (K, X, Y, Z) probabilities are made.
        start = time.perf_counter()
        stats = ConfidenceStats() if qc else None
        geoms: list[SliceGeometry] = []

        def observe(scores: np.ndarray, geom: SliceGeometry, logits: bool) -> None:
            assert stats is not None
            if not geoms:
                geoms.append(geom)
            stats.observe(scores, logits=logits)

        labels, timings, start = self._predict(volume, batch_size, lut=self._lut, observe=observe if qc else None,
                                               start=start)
        report = None
        if qc:
            # The input checks ran before inference (in _predict); the output checks see the raw mask.
            t0 = time.perf_counter()
            body = geoms[0].crop_xy if geoms and geoms[0].crop_xy is not None else body_box(volume, 0.0)
            report = check_output(labels, volume, self._organs, self._qc_record, stats, body,
                                  timings["qc_input"][0], timings["qc_input"][1],
                                  qc_seconds=timings.get("qc", 0.0) + time.perf_counter() - t0)
            timings["qc"] = report.qc_ms / 1e3
        if self._largest_component:
            t0 = time.perf_counter()
            keep_largest_components_(labels, self._organs)
            timings["postprocess"] += time.perf_counter() - t0
        self._record(timings, start, qc=report)
        return volume.with_array(labels, modality="SEG"), report

    def close(self) -> None:
        """Release the backend session."""
        self.session.close()

    def __enter__(self) -> "Segmenter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _predict(self, volume: Volume, batch_size: int, lut: np.ndarray | None = None,
                 observe: Any = None, start: float | None = None) -> tuple[np.ndarray, dict[str, Any], float]:
        start = time.perf_counter() if start is None else start
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ConfigError(f"batch_size={batch_size!r} must be an integer >= 1, e.g. 16.")
        _check_volume(volume, self._spec.modality)
        t: dict[str, Any] = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0, "batches": 0, "slices": 0}
        if observe is not None:
            t0 = time.perf_counter()
            t["qc_input"] = check_input(volume, self._qc_record, modality=self._spec.modality,
                                        organs=[o.name for o in self._organs],
                                        context_spacing_mm=self._spec.context_spacing_mm)
            t["qc"] = time.perf_counter() - t0
        t["preprocess"] = time.perf_counter() - start - t.get("qc", 0.0)
        name_in, name_out = self._input.name, self._output
        probs = infer_volume(lambda x: self.session.run({name_in: x})[name_out], volume, self._spec,
                             batch_size=int(batch_size), fixed_batch=self._fixed_batch, lut=lut, timings=t,
                             observe=observe)
        return probs, t, start

    def _record(self, t: dict[str, Any], start: float, qc: QCReport | None = None) -> None:
        total = time.perf_counter() - start
        timings = StageTimings(preprocess_ms=t["preprocess"] * 1e3, inference_ms=t["inference"] * 1e3,
                               postprocess_ms=t["postprocess"] * 1e3, total_ms=total * 1e3, slices=t["slices"],
                               batches=t["batches"], qc_ms=t.get("qc", 0.0) * 1e3)
        with self._lock:
            self._last = timings
            if qc is not None:
                self._last_qc = qc


def _check_volume(volume: object, modality: str) -> None:
    """Refuse what would otherwise fail deep inside resampling or a backend, saying what to do."""
    if not isinstance(volume, Volume):
        shape = getattr(volume, "shape", None)
        raise InputError(
            f"segment/predict take an edgemed.io.Volume (a 3D array with its affine), got {type(volume).__name__}"
            f"{f' of shape {shape}' if shape is not None else ''}. Read a file with edgemed.io.read_volume(path) "
            "or wrap an (X, Y, Z) array: Volume(array, affine_mm)."
        )
    name = volume.source or "volume"
    array = volume.array
    if array.ndim != 3 or array.size == 0:
        raise InputError(f"{name}: expected a non-empty 3D (X, Y, Z) array, got shape {array.shape}.")
    if array.dtype.kind not in "fiu":
        raise InputError(f"{name}: voxel type {array.dtype} is not numeric intensity; pass a float or integer scan.")
    spacing = np.asarray(volume.spacing_mm)  # the header before the voxels (its plausible range: prepare_volume)
    if not (np.isfinite(spacing).all() and (spacing > 0).all()):
        raise InputError(f"{name}: voxel spacing {tuple(spacing)} mm is not positive and finite; the affine is broken.")
    # What the voxels are comes next: NaN voxels, or a label map whose modality was guessed, would
    # otherwise read as "the wrong modality". A stated modality that differs is named as such.
    check_scan_values(volume, finite_only=volume.modality != modality and not volume.meta.get("modality_guessed"))
    if volume.modality != modality:
        guessed = " (guessed from its intensities)" if volume.meta.get("modality_guessed") else ""
        raise InputError(f"{name} is {volume.modality!r}{guessed}, but this model segments {modality} scans. "
                         f"Pass a {modality} scan; if it is one, state it: read_volume(path, modality={modality!r}).")
