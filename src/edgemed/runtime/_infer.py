"""The one inference loop: prepared volume → 2.5D slice batches → model → student grid → scan grid.

Every caller that runs a student over slices (the runtime's `Segmenter`, export parity,
quantization calibration, torch evaluation in `edgemed.models`) goes through these functions,
so a change here (say, a streaming, bounded-memory version) reaches all of them. numpy only:
`run` is any callable from an input batch to logits (an ONNX Runtime session, a torch net
wrapped by `edgemed.models.predict_slices`, OpenVINO, TensorRT).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from edgemed.artifacts import PreprocessSpec
from edgemed.errors import ConfigError, InputError
from edgemed.io import SliceGeometry, Volume, context_stack, from_student_grid, prepare_volume, resample_array
from edgemed.runtime._postprocess import softmax_

__all__ = ["infer_slices", "infer_volume", "iter_slice_batches"]

RunFn = Callable[[np.ndarray], Any]
#: Scan-grid values (voxels x classes) brought back from the student grid per slab: bounds the
#: float32 temporaries of `infer_volume` to a few tens of MB, whatever the scan's size.
_SLAB_VALUES = 2**21


def iter_slice_batches(image: np.ndarray, ks: np.ndarray | Sequence[int], *, context: int, step: float = 1.0,
                       batch_size: int = 16,
                       fixed_batch: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The 2.5D input batches for axial slices `ks` of a prepared (Z, H, W) image.

    Args:
        image: A prepared image (`edgemed.io.prepare_volume`).
        ks: The axial slices to stack, in the order they are yielded.
        context: Neighbours on each side (the spec's `context_slices`).
        step: Distance between context slices, in slices (the geometry's `context_step`).
        batch_size: Slices per batch when the model takes any batch size.
        fixed_batch: The model's fixed batch size, or None; when given it replaces `batch_size`
            and the last batch is padded to it by repeating its last stack.

    Yields:
        (ks_chunk, x): the slices of this batch and their float32 C-contiguous (n, C, H, W)
        input, where n = len(ks_chunk), or `fixed_batch` when padded (drop rows past len(ks_chunk)).

    Raises:
        ConfigError: batch_size or fixed_batch is not an integer >= 1.
    """
    batch = _batch_of(batch_size, fixed_batch)
    ks = np.asarray(ks)
    for first in range(0, len(ks), batch):
        chunk = ks[first:first + batch]
        x = np.ascontiguousarray(context_stack(image, chunk, context, step=step), dtype=np.float32)
        if fixed_batch and len(chunk) < batch:  # a fixed-batch model: pad the last batch; callers drop the padding
            x = np.concatenate([x, np.repeat(x[-1:], batch - len(chunk), axis=0)])
        yield chunk, x


def infer_slices(run: RunFn, image: np.ndarray, ks: np.ndarray | Sequence[int], *, context: int, step: float = 1.0,
                 batch_size: int = 16, fixed_batch: int | None = None, softmax: bool = True,
                 timings: dict[str, Any] | None = None) -> np.ndarray:
    """Run a model over axial slices `ks` of a prepared (Z, H, W) image, batch by batch.

    Args:
        run: Input batch (n, C, H, W) float32 → logits (n, K, H, W) (array-like).
        context, step, batch_size, fixed_batch: As for `iter_slice_batches`.
        softmax: Apply a float32 softmax over classes to each batch's output; False keeps what
            `run` returns (logits, or probabilities when `run` computes them itself).
        timings: A dict to accumulate into: "preprocess", "inference", "postprocess" (seconds:
            stacking, `run`, softmax and copying), "batches" and "slices" (counts).

    Returns:
        (len(ks), K, H, W) float32, row i for slice ks[i].

    Raises:
        InputError: `ks` is empty.
        ConfigError: batch_size or fixed_batch is not an integer >= 1.

    Example:
        >>> probs = infer_slices(lambda x: session.run({"image": x})["logits"], image, [10, 11, 12], context=2)
    """
    n = len(ks)
    if n == 0:
        raise InputError("no slices to run the model on; pass at least one slice index.")
    t = {"preprocess": 0.0, "inference": 0.0, "postprocess": 0.0, "batches": 0, "slices": 0}
    scores: np.ndarray | None = None
    done = 0
    t0 = time.perf_counter()
    for chunk, x in iter_slice_batches(image, ks, context=context, step=step, batch_size=batch_size,
                                       fixed_batch=fixed_batch):
        t1 = time.perf_counter()
        out = np.asarray(run(x))[: len(chunk)]
        t2 = time.perf_counter()
        if scores is None:
            scores = np.empty((n, *out.shape[1:]), dtype=np.float32)
        rows = scores[done:done + len(chunk)]
        rows[...] = out
        if softmax:
            softmax_(rows)
        done += len(chunk)
        t["preprocess"] += t1 - t0
        t["inference"] += t2 - t1
        t["postprocess"] += time.perf_counter() - t2
        t["batches"] += 1
        t["slices"] += len(chunk)
        t0 = time.perf_counter()
    assert scores is not None and done == n
    if timings is not None:
        _accumulate(timings, t)
    return scores


def infer_volume(run: RunFn, volume: Volume, spec: PreprocessSpec, *, batch_size: int = 16,
                 fixed_batch: int | None = None, softmax: bool = True, lut: np.ndarray | None = None,
                 timings: dict[str, Any] | None = None,
                 observe: Callable[[np.ndarray, SliceGeometry, bool], None] | None = None) -> np.ndarray:
    """Run a model over every axial slice of a volume and return its output on the volume's own grid.

    The whole pipeline: `prepare_volume` (window, body crop, resample, pad), `infer_slices`,
    and `from_student_grid` (linear interpolation back, background outside the crop). It streams:
    the student's slices run a slab at a time (a multiple of the batch, with their 2.5D context
    from the prepared image), and each slab goes back to the scan grid and into the result before
    the next one runs, so besides the result and the prepared (student-grid) image only one slab's
    scan-grid temporaries exist (~8 MB). The student grid keeps the scan's axial
    slices, so slab by slab is exactly what the whole volume at once gives.

    Args:
        run: Input batch (n, C, H, W) float32 → logits (n, K, H, W).
        volume: The scan, of the spec's modality.
        spec: The student's preprocessing.
        batch_size, fixed_batch, softmax, timings: As for `infer_slices`; timings also count
            `prepare_volume` as preprocess and the way back to the scan grid as postprocess.
        lut: Class → label id (K entries; an unsigned integer dtype). When given, the result is
            the label map lut[argmax over classes] of the probabilities on the scan grid, and no
            (K, X, Y, Z) array is made. Where the student's pixels are the scan's voxels (no
            in-plane resampling) the argmax is taken of the logits (softmax keeps the order).
        observe: Called with each slab's (n, K, H, W) scores on the student grid, the geometry,
            and whether the scores are logits (True: the lut path on the student's own pixels,
            which skips the softmax) or probabilities, before the slab goes back to the scan grid
            (the runtime QC's confidence statistics, `ConfidenceStats.observe`); it must not keep
            or change them. Its time is counted under timings["qc"].

    Returns:
        (K, X, Y, Z) float32: probabilities (softmax=True) or what `run` returns; or, with `lut`,
        (X, Y, Z) labels of lut's dtype.

    Example:
        >>> with load("out/liver.edgemed", backend="ort") as seg:
        ...     probs = infer_volume(lambda x: seg.session.run({"image": x})["logits"], ct, seg.bundle.preprocess)
    """
    t0 = time.perf_counter()
    image, geom = prepare_volume(volume, spec)
    t: dict[str, Any] = {"preprocess": time.perf_counter() - t0, "inference": 0.0, "postprocess": 0.0, "batches": 0,
                         "slices": 0}
    batch = _batch_of(batch_size, fixed_batch)
    x, y, z = geom.volume_shape
    x0, x1, y0, y1 = geom.box
    same_grid = geom.resampled_xy == (x1 - x0, y1 - y0)
    out: np.ndarray | None = None
    k0, slab = 0, batch
    while k0 < z:
        # Slabs are whole batches (but the last), so the model sees the batches one call would make.
        k1 = min(z, k0 + slab)
        scores = infer_slices(run, image, np.arange(k0, k1), context=spec.context_slices, step=geom.context_step,
                              batch_size=batch_size, fixed_batch=fixed_batch,
                              softmax=softmax and not (lut is not None and same_grid), timings=t)
        t0 = time.perf_counter()
        if observe is not None:
            observe(scores, geom, not (softmax and not (lut is not None and same_grid)))
            t["qc"] = t.get("qc", 0.0) + time.perf_counter() - t0
            t0 = time.perf_counter()
        classes = scores.shape[1]
        if out is None:
            # Labels in Fortran order, as read_volume's scans are: each slab is one contiguous block.
            out = np.zeros((x, y, z), dtype=lut.dtype, order="F") if lut is not None else \
                np.empty((classes, x, y, z), dtype=np.float32)
        # Back to the scan grid a few slices at a time: at most _SLAB_VALUES scan-grid values per piece.
        piece = max(1, _SLAB_VALUES // max(1, (x1 - x0) * (y1 - y0) * classes))
        for p0 in range(0, k1 - k0, piece):
            part = scores[p0:p0 + piece]
            z0, z1 = k0 + p0, k0 + p0 + len(part)
            if lut is None:
                out[..., z0:z1] = from_student_grid(part, dataclasses.replace(geom, volume_shape=(x, y, z1 - z0)))
            else:
                channels = _crop_channels(part, geom) if same_grid else _scan_channels(part, geom)
                out[x0:x1, y0:y1, z0:z1] = lut[_argmax(channels)].transpose(1, 2, 0)
        del scores
        t["postprocess"] += time.perf_counter() - t0
        slab = batch * max(1, 4 * piece // batch)
        k0 = k1
    assert out is not None
    if timings is not None:
        _accumulate(timings, t)
    return out


def _crop_channels(scores: np.ndarray, geom: SliceGeometry) -> list[np.ndarray]:
    """The body-crop part of (n, K, H, W) student scores, as K (n, X', Y') views."""
    (rx, ry), (ox, oy) = geom.resampled_xy, geom.offset_xy
    return [scores[:, c, ox:ox + rx, oy:oy + ry] for c in range(scores.shape[1])]


def _scan_channels(scores: np.ndarray, geom: SliceGeometry) -> list[np.ndarray]:
    """(n, K, H, W) student scores on the scan grid inside the body crop: K (n, x1-x0, y1-y0) arrays,
    interpolated as `from_student_grid` does (the same passes in the same order, slice-first layout)."""
    x0, x1, y0, y1 = geom.box
    return [resample_array(np.ascontiguousarray(c), (None, x1 - x0, y1 - y0), order="linear")
            for c in _crop_channels(scores, geom)]


def _argmax(channels: list[np.ndarray]) -> np.ndarray:
    """np.argmax over a list of equally shaped arrays (first index on ties), as uint8/uint16 indices,
    without stacking them: K - 1 elementwise passes."""
    if len(channels) == 2:
        return np.greater(channels[1], channels[0]).view(np.uint8)
    best = np.array(channels[0], dtype=np.float32, copy=True)
    index = np.zeros(best.shape, dtype=np.uint8 if len(channels) <= 256 else np.uint16)
    for c in range(1, len(channels)):
        better = channels[c] > best
        index[better] = c
        np.maximum(best, channels[c], out=best)
    return index


def _batch_of(batch_size: int, fixed_batch: int | None) -> int:
    for name, value in (("batch_size", batch_size), ("fixed_batch", fixed_batch)):
        if value is None and name == "fixed_batch":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"{name}={value!r} must be an integer >= 1, e.g. 16.")
    return int(fixed_batch or batch_size)


def _accumulate(into: dict[str, Any], t: dict[str, Any]) -> None:
    for key, value in t.items():
        into[key] = into.get(key, 0) + value
