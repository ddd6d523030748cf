"""The one inference loop: prepared volume → 2.5D slice batches → model → student grid → scan grid.

Every caller that runs a student over slices (the runtime's `Segmenter`, export parity,
quantization calibration, torch evaluation in `edgemed.models`) goes through these functions,
so a change here (say, a streaming, bounded-memory version) reaches all of them. numpy only:
`run` is any callable from an input batch to logits (an ONNX Runtime session, a torch net
wrapped by `edgemed.models.predict_slices`, OpenVINO, TensorRT).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np

from edgemed.artifacts import PreprocessSpec
from edgemed.errors import ConfigError, InputError
from edgemed.io import Volume, context_stack, from_student_grid, prepare_volume
from edgemed.runtime._postprocess import softmax as _softmax

__all__ = ["infer_slices", "infer_volume", "iter_slice_batches"]

RunFn = Callable[[np.ndarray], Any]


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
        scores[done:done + len(chunk)] = _softmax(out, axis=1) if softmax else out
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
                 fixed_batch: int | None = None, softmax: bool = True,
                 timings: dict[str, Any] | None = None) -> np.ndarray:
    """Run a model over every axial slice of a volume and return its output on the volume's own grid.

    The whole pipeline: `prepare_volume` (window, body crop, resample, pad), `infer_slices`,
    and `from_student_grid` (linear interpolation back, background outside the crop).

    Args:
        run: Input batch (n, C, H, W) float32 → logits (n, K, H, W).
        volume: The scan, of the spec's modality.
        spec: The student's preprocessing.
        batch_size, fixed_batch, softmax, timings: As for `infer_slices`; timings also count
            `prepare_volume` as preprocess and `from_student_grid` as postprocess.

    Returns:
        (K, X, Y, Z) float32: probabilities (softmax=True) or what `run` returns.

    Example:
        >>> with load("out/liver.edgemed", backend="ort") as seg:
        ...     probs = infer_volume(lambda x: seg.session.run({"image": x})["logits"], ct, seg.bundle.preprocess)
    """
    t0 = time.perf_counter()
    image, geom = prepare_volume(volume, spec)
    t = {"preprocess": time.perf_counter() - t0}
    scores = infer_slices(run, image, np.arange(image.shape[0]), context=spec.context_slices, step=geom.context_step,
                          batch_size=batch_size, fixed_batch=fixed_batch, softmax=softmax, timings=t)
    t0 = time.perf_counter()
    probs = from_student_grid(scores, geom)
    t["postprocess"] += time.perf_counter() - t0
    if timings is not None:
        _accumulate(timings, t)
    return probs


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
