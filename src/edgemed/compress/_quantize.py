"""INT8 post-training quantization of an ONNX bundle, Dice-controlled, kept only where it is faster.

Two flows, picked by the config type:
- `NncfInt8Config`: NNCF PTQ on the ONNX graph; the QDQ model it writes is meant for OpenVINO,
  which fuses it into INT8 kernels (measured here: 2-3x faster than ONNX Runtime FP32). ONNX
  Runtime does not fuse NNCF's pattern and runs it no faster than FP32.
- `OrtInt8Config`: ONNX Runtime's own `quantize_static` (QDQ, per-channel, MinMax / Entropy /
  Percentile calibration), for devices that only have ONNX Runtime.

- `NncfQatConfig`: quantization-aware training, for when PTQ misses the Dice budget: NNCF
  inserts fake quantizers into the torch student (BatchNorm folded first, initialised by PTQ
  on the same calibration slices), which is then distilled from its own FP32 self on those
  slices (label-free) and exported as a QDQ graph for OpenVINO.

Calibration slices come from real scans through `edgemed.io`, stratified so the organ is seen:
the FP32 model's own masks (label-free) pick half the slices among those with the organ.
The quantized model is accepted only if its Dice drop stays within the budget (vs reference
label maps when given, else vs the FP32 model's masks) and if it is actually faster than FP32
on the target backend, measured side by side; otherwise FP32 is kept and the reason recorded.
"""

from __future__ import annotations

import collections
import os
import statistics
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgemed._deps import require
from edgemed.artifacts import write_artifact
from edgemed.errors import ConfigError, InputError
from edgemed.io import Volume, prepare_volume, read_labels, read_volume
from edgemed.metrics import dice

__all__ = ["NncfInt8Config", "NncfQatConfig", "OrtInt8Config", "QuantizeResult", "quantize"]

_CALIBRATE = ("minmax", "entropy", "percentile")
_BATCH = 16


@dataclass(frozen=True, slots=True, kw_only=True)
class NncfInt8Config:
    """INT8 PTQ with NNCF for OpenVINO.

    Attributes:
        calibration_slices: 2.5D slice stacks NNCF collects statistics on.
        preset: "performance" (symmetric weights and activations) or "mixed" (asymmetric
            activations). Measured on the liver student: performance lost 0.5 Dice points, mixed 2.4.
        fast_bias_correction: NNCF's fast bias correction (recommended on).
        accuracy_control: When the first INT8 model misses the Dice budget, rerun with NNCF's
            accuracy control: it ranks layers by how much their quantization hurts Dice on
            validation slices and returns the most sensitive ones to FP32 until the budget holds.
        max_dice_drop: The largest Dice loss (0.005 = half a point) INT8 may cost; else FP32 is kept.
        backend: Where the INT8 model is meant to run and is timed.
        ignored_layers: Node names kept in FP32 (NNCF ignored scope).
    """

    calibration_slices: int = 128
    preset: str = "performance"
    fast_bias_correction: bool = True
    accuracy_control: bool = True
    max_dice_drop: float = 0.005
    backend: str = "openvino"
    ignored_layers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_common(self.calibration_slices, self.max_dice_drop)
        if self.preset not in ("mixed", "performance"):
            raise ConfigError(f"preset={self.preset!r}; use 'mixed' or 'performance'.")


@dataclass(frozen=True, slots=True, kw_only=True)
class OrtInt8Config:
    """INT8 PTQ with ONNX Runtime's quantize_static (QDQ).

    Attributes:
        calibration_slices: Slice stacks used for calibration.
        per_channel: Per-output-channel weight scales.
        calibrate_method: "minmax", "entropy" or "percentile".
        max_dice_drop: As in `NncfInt8Config`.
        backend: Where the model is timed ("ort").
        ignored_layers: Node names kept in FP32.
    """

    calibration_slices: int = 128
    per_channel: bool = True
    calibrate_method: str = "minmax"
    max_dice_drop: float = 0.005
    backend: str = "ort"
    ignored_layers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_common(self.calibration_slices, self.max_dice_drop)
        if self.calibrate_method not in _CALIBRATE:
            raise ConfigError(f"calibrate_method={self.calibrate_method!r}; use one of {', '.join(_CALIBRATE)}.")


@dataclass(frozen=True, slots=True, kw_only=True)
class NncfQatConfig:
    """INT8 by quantization-aware training with NNCF, distilled from the FP32 student.

    Attributes:
        student: The student checkpoint the bundle was exported from (its digest is checked):
            the network that is trained with fake quantizers.
        calibration_slices: 2.5D slice stacks (stratified like PTQ's) used both to initialise
            the quantizer ranges and as the training set.
        epochs: Passes over those slices.
        lr: AdamW learning rate (small: the weights only adapt to their INT8 grid).
        batch_size: Slices per step.
        temperature: Softmax temperature of the distillation from the FP32 student.
        max_dice_drop: As in `NncfInt8Config`.
        backend: Where the INT8 model is meant to run and is timed ("openvino").
        ignored_layers: Unused (NNCF's torch ignored scope names differ from ONNX node names).
    """

    student: str | os.PathLike[str]
    calibration_slices: int = 256
    epochs: int = 8
    lr: float = 1e-4
    batch_size: int = 8
    temperature: float = 2.0
    max_dice_drop: float = 0.005
    backend: str = "openvino"
    ignored_layers: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_common(self.calibration_slices, self.max_dice_drop)
        if self.epochs < 1 or self.batch_size < 1:
            raise ConfigError("epochs and batch_size must be >= 1.")
        if not 0 < self.lr < 0.1:
            raise ConfigError(f"lr={self.lr} is outside (0, 0.1); QAT fine-tunes gently, try 1e-4.")


def _check_common(slices: int, drop: float) -> None:
    if slices < 8:
        raise ConfigError(f"calibration_slices={slices} is too few; use at least 8 (128 is typical).")
    if not 0.0 <= drop <= 0.2:
        raise ConfigError(f"max_dice_drop={drop} must be in [0, 0.2]; 0.005 is half a Dice point.")


@dataclass(frozen=True)
class QuantizeResult:
    """What `quantize` measured and chose (also stored in the bundle's manifest)."""

    chosen_precision: str
    chosen_backend: str
    reason: str
    dice: dict[str, Any]
    latency_ms: dict[str, float]
    calibration: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return asdict(self)


def quantize(bundle: Any, scans: Sequence[str | os.PathLike[str] | Volume], config: NncfInt8Config | OrtInt8Config,
             out: str | os.PathLike[str], *, validation_scans: Sequence[str | os.PathLike[str] | Volume] | None = None,
             references: Sequence[str | os.PathLike[str]] | None = None, timing_repeats: int = 7,
             overwrite: bool = False, require_faster: bool = True) -> QuantizeResult:
    """Quantize a bundle's model to INT8, check Dice, time it, and write the faster acceptable bundle.

    Args:
        bundle: An `OnnxBundle` or its directory (FP32, from `edgemed export`).
        scans: Calibration scans (real CT/MR; no labels needed).
        config: `NncfInt8Config` (OpenVINO), `OrtInt8Config` (ONNX Runtime) or `NncfQatConfig`
            (quantization-aware training of the torch student, for OpenVINO).
        out: The bundle directory to write.
        validation_scans: Scans the Dice drop is measured on (default: the calibration scans).
        references: Reference label maps for `validation_scans` (e.g. the teacher's); without
            them the Dice is measured against the FP32 model's own masks.
        overwrite: Replace an ONNX bundle at `out`; anything else there is refused (`check_output`).
        require_faster: Keep INT8 only where it is measured faster than FP32 here (>= 5 %). False keeps
            any INT8 model within the Dice budget: for a target that is not this machine, or a caller that
            times its candidates itself (`edgemed compress`, whose candidate set must not depend on one
            timing here).

    Returns:
        What was measured and chosen; the written bundle records the same.
    """
    from edgemed.artifacts import BUNDLE_KIND, OnnxBundle, check_output
    from edgemed.compress._dist import distributed

    check_output(out, kind=BUNDLE_KIND, overwrite=overwrite,
                 inputs=[bundle.path if isinstance(bundle, OnnxBundle) else bundle, *scans, *(validation_scans or ()),
                         *(references or ())])

    with distributed() as ctx:
        if ctx.world_size > 1 and not isinstance(config, NncfQatConfig):
            raise ConfigError(f"{type(config).__name__} (post-training quantization) runs in one process; of the "
                              "quantization methods only QAT (NncfQatConfig, --method qat) trains under torchrun.")
        return _quantize(bundle, scans, config, out, validation_scans, references, timing_repeats, ctx, overwrite,
                         require_faster)


def _quantize(bundle: Any, scans: Sequence[str | os.PathLike[str] | Volume], config: Any, out: str | os.PathLike[str],
              validation_scans: Sequence[str | os.PathLike[str] | Volume] | None,
              references: Sequence[str | os.PathLike[str]] | None, timing_repeats: int, ctx: Any,
              overwrite: bool = False, require_faster: bool = True) -> QuantizeResult:
    from edgemed.artifacts import BUNDLE_KIND, BUNDLE_SCHEMA, OnnxBundle
    from edgemed.runtime.backends import open_session

    handler = _HANDLERS.get(type(config))
    if handler is None:
        raise ConfigError(f"unknown quantization config {type(config).__name__}; use NncfInt8Config, OrtInt8Config "
                          "or NncfQatConfig.")
    src = bundle if isinstance(bundle, OnnxBundle) else OnnxBundle.load(bundle)
    if src.precision != "fp32":
        raise InputError(f"{src.path} is already {src.precision}; quantize the FP32 bundle from edgemed export.")
    if not scans:
        raise ConfigError("no calibration scans; pass real scans of the kind the model will see (--scans).")
    if isinstance(config, NncfQatConfig):
        _check_qat_student(config, src)
    val_scans = list(validation_scans) if validation_scans else list(scans)
    if references is not None and len(references) != len(val_scans):
        raise ConfigError(f"{len(val_scans)} validation scans but {len(references)} reference label maps.")
    spec = src.preprocess
    name = src.inputs[0].name
    volumes = [s if isinstance(s, Volume) else read_volume(s) for s in scans]
    val_volumes = volumes if not validation_scans else [s if isinstance(s, Volume) else read_volume(s)
                                                        for s in val_scans]
    with open_session("ort", src.model_path) as fp32:
        calib, calib_record = _calibration_slices(fp32, volumes, spec, name, config.calibration_slices)
        fp32_masks = _masks(src, fp32, "ort", val_volumes)
    refs = [(read_labels(r, like=v).array if not isinstance(r, np.ndarray) else r) for r, v in
            zip(references, val_volumes)] if references is not None else None
    organs = src.organs
    with tempfile.TemporaryDirectory(prefix="edgemed-quantize-") as tmp:
        q_path = Path(tmp) / "model_int8.onnx"
        qat = isinstance(config, NncfQatConfig)
        handler(src.model_path, q_path, calib, name, config, **({"ctx": ctx} if qat else {}))
        if not ctx.is_main:  # rank 0 measures the QAT model and writes the bundle
            ctx.barrier()
            return _result_of(out)
        with open_session(config.backend, q_path) as int8:
            int8_masks = _masks(src, int8, config.backend, val_volumes)
        scores = _dice_report(fp32_masks, int8_masks, refs, organs)
        restored: list[str] = []
        if (isinstance(config, NncfInt8Config) and config.accuracy_control
                and scores["worst_drop"] > config.max_dice_drop):
            with open_session("ort", src.model_path) as fp32:
                restored = _quantize_nncf_accuracy_control(src.model_path, q_path, calib, fp32, name, organs, config)
            with open_session(config.backend, q_path) as int8:
                int8_masks = _masks(src, int8, config.backend, val_volumes)
            first_drop = scores["worst_drop"]
            scores = _dice_report(fp32_masks, int8_masks, refs, organs)
            scores["first_attempt_worst_drop"] = first_drop
            scores["kept_in_fp32_by_accuracy_control"] = restored
        latency = _time_side_by_side(src.model_path, q_path, config.backend, calib, name, timing_repeats)
        within = scores["worst_drop"] <= config.max_dice_drop
        fp32_best = min(latency["fp32_ort"], latency[f"fp32_{config.backend}"])
        faster = latency[f"int8_{config.backend}"] < 0.95 * fp32_best
        if within and (faster or not require_faster):
            precision, backend, model_bytes = "int8", config.backend, q_path.read_bytes()
            speed = latency['fp32_ort'] / latency[f'int8_{config.backend}']
            reason = (f"INT8 on {config.backend} is {speed:.2f}x " + ("faster than" if speed >= 1 else "the speed of")
                      + f" FP32 on ONNX Runtime here, Dice drop {scores['worst_drop']:.4f} <= {config.max_dice_drop}"
                      + ("" if faster else "; kept although not faster here (require_faster=False)"))
        else:
            fp32_backend = "ort" if latency["fp32_ort"] <= latency[f"fp32_{config.backend}"] else config.backend
            precision, backend, model_bytes = "fp32", fp32_backend, src.model_path.read_bytes()
            reason = ("INT8 kept out: " + ("; ".join(
                ([f"Dice drop {scores['worst_drop']:.4f} > budget {config.max_dice_drop}"] if not within else []) +
                ([f"INT8 on {config.backend} ({latency[f'int8_{config.backend}']:.1f} ms) is not faster than FP32 "
                  f"({fp32_best:.1f} ms)"] if not faster else []))))
    result = QuantizeResult(precision, backend, reason, scores, latency,
                            {**calib_record, "method": type(config).__name__, "config": _config_json(config)})
    metadata = src.meta.with_(precision=precision, preferred_backend=backend, quantization=result.to_json())
    write_artifact(out, kind=BUNDLE_KIND, schema_version=BUNDLE_SCHEMA, payload={src.meta.model: model_bytes},
                   metadata=metadata.to_json(), parent=src.manifest.digest, overwrite=overwrite)
    ctx.barrier()
    return result


def _result_of(out: str | os.PathLike[str]) -> QuantizeResult:
    """The QuantizeResult rank 0 recorded in the bundle it wrote (what the other processes return)."""
    from edgemed.artifacts import OnnxBundle

    return QuantizeResult(**(OnnxBundle.load(out).meta.quantization or {}))


def _config_json(config: Any) -> dict[str, Any]:
    raw = asdict(config)
    raw["ignored_layers"] = list(raw["ignored_layers"])
    if "student" in raw:
        raw["student"] = str(raw["student"])
    return raw


def _calibration_slices(session: Any, volumes: list[Volume], spec: Any, name: str,
                        n: int) -> tuple[list[np.ndarray], dict[str, Any]]:
    """Up to n (1, C, H, W) stacks, half from slices where the FP32 model sees an organ (label-free)."""
    from edgemed.runtime import iter_slice_batches

    out_name = session.outputs[0].name
    organ, other = [], []
    for volume in volumes:
        image, geom = prepare_volume(volume, spec)
        for _, x in iter_slice_batches(image, np.arange(image.shape[0]), context=spec.context_slices,
                                       step=geom.context_step, batch_size=_BATCH):
            has_organ = (session.run({name: x})[out_name].argmax(1) > 0).any(axis=(1, 2))
            for stack, found in zip(x, has_organ):
                (organ if found else other).append(stack[None])
    if not organ:
        raise InputError("the model finds its organ in none of the calibration scans; give scans that show it.")
    take_organ = min(len(organ), max(n // 2, n - len(other)))
    picks = _even(organ, take_organ) + _even(other, min(len(other), n - take_organ))
    return picks, {"slices": len(picks), "organ_slices": take_organ, "scans": len(volumes),
                   "stratified_by": "FP32 model's own masks"}


def _even(items: list[Any], n: int) -> list[Any]:
    if n <= 0:
        return []
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in idx]


def _masks(bundle: Any, session: Any, backend: str, volumes: list[Volume]) -> list[np.ndarray]:
    """Class-index masks on each volume's own grid, through the runtime's own pipeline."""
    from edgemed.runtime import Segmenter

    seg = Segmenter(bundle, session, backend=backend)  # not closed here: the caller owns the session
    return [seg.predict(v, batch_size=_BATCH).argmax(0) for v in volumes]


def _dice_report(fp32: list[np.ndarray], int8: list[np.ndarray], refs: list[np.ndarray] | None,
                 organs: Any) -> dict[str, Any]:
    per_organ: dict[str, Any] = {}
    worst = 0.0
    for o in organs:
        if refs is not None:
            ref = np.concatenate([(r == o.label_id).ravel() for r in refs])
            d32 = dice(np.concatenate([(m == o.channel).ravel() for m in fp32]), ref)
            d8 = dice(np.concatenate([(m == o.channel).ravel() for m in int8]), ref)
            per_organ[o.name] = {"fp32_vs_reference": round(d32, 4), "int8_vs_reference": round(d8, 4),
                                 "drop": round(d32 - d8, 4)}
            worst = max(worst, d32 - d8)
        else:
            d = dice(np.concatenate([(m == o.channel).ravel() for m in int8]),
                     np.concatenate([(m == o.channel).ravel() for m in fp32]))
            per_organ[o.name] = {"int8_vs_fp32": round(d, 4), "drop": round(1.0 - d, 4)}
            worst = max(worst, 1.0 - d)
    return {"reference": "given label maps" if refs is not None else "the FP32 model's masks",
            "organs": per_organ, "worst_drop": round(worst, 4)}


def _stack_padded(stacks: list[np.ndarray]) -> np.ndarray:
    """(1, C, H, W) stacks of several scans (their body crops differ in size) as one (N, C, H, W) batch,
    zero-padded at the bottom and right: zero is air after the CT window, like the crop's margin."""
    h = max(x.shape[2] for x in stacks)
    w = max(x.shape[3] for x in stacks)
    return np.concatenate([np.pad(x, ((0, 0), (0, 0), (0, h - x.shape[2]), (0, w - x.shape[3]))) for x in stacks])


def _time_side_by_side(fp32_path: Path, int8_path: Path, backend: str, calib: list[np.ndarray], name: str,
                       repeats: int) -> dict[str, float]:
    """Median ms per 16-slice batch, the candidates interleaved so machine noise hits all alike."""
    from edgemed.measure import time_interleaved
    from edgemed.runtime.backends import open_session

    # Scans of different sizes give stacks of different sizes (the body crop): time the most common one.
    shape = collections.Counter(c.shape for c in calib).most_common(1)[0][0]
    same = [c for c in calib if c.shape == shape]
    x = np.concatenate([same[i % len(same)] for i in range(16)])
    sessions = {"fp32_ort": open_session("ort", fp32_path), f"fp32_{backend}": open_session(backend, fp32_path),
                f"int8_{backend}": open_session(backend, int8_path)}
    try:
        times = time_interleaved(sessions, {name: x}, repeats)
    finally:
        for s in sessions.values():
            s.close()
    return {k: round(statistics.median(v), 2) for k, v in times.items()}


def _quantize_nncf(src: Path, dst: Path, calib: list[np.ndarray], name: str, config: NncfInt8Config) -> None:
    onnx = require("onnx")
    nncf = require("nncf")
    model = onnx.load(str(src))
    kwargs: dict[str, Any] = {}
    if config.ignored_layers:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=list(config.ignored_layers))
    preset = nncf.QuantizationPreset.MIXED if config.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE
    quantized = nncf.quantize(model, nncf.Dataset(calib, lambda x: {name: x}), preset=preset,
                              subset_size=len(calib), fast_bias_correction=config.fast_bias_correction, **kwargs)
    onnx.save(quantized, str(dst))


def _quantize_ort(src: Path, dst: Path, calib: list[np.ndarray], name: str, config: OrtInt8Config) -> None:
    q = require("onnxruntime.quantization", extra="runtime")
    methods = {"minmax": q.CalibrationMethod.MinMax, "entropy": q.CalibrationMethod.Entropy,
               "percentile": q.CalibrationMethod.Percentile}

    class _Reader(q.CalibrationDataReader):  # type: ignore[misc, name-defined]
        def __init__(self) -> None:
            self._it = iter(calib)

        def get_next(self) -> dict[str, np.ndarray] | None:
            x = next(self._it, None)
            return None if x is None else {name: x}

    with tempfile.TemporaryDirectory(prefix="edgemed-ortq-") as tmp:
        # quantize_static wants a shape-inferred, pre-processed model for best results.
        pre = Path(tmp) / "pre.onnx"
        try:
            from onnxruntime.quantization.shape_inference import quant_pre_process

            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        except Exception:  # noqa: BLE001 - pre-processing is an optimisation; quantize the original then
            pre = src
        q.quantize_static(str(pre), str(dst), _Reader(), quant_format=q.QuantFormat.QDQ,
                          per_channel=config.per_channel, activation_type=q.QuantType.QUInt8,
                          weight_type=q.QuantType.QInt8, calibrate_method=methods[config.calibrate_method],
                          nodes_to_exclude=list(config.ignored_layers))


def _quantize_nncf_accuracy_control(src: Path, dst: Path, calib: list[np.ndarray], fp32: Any, name: str,
                                    organs: Any, config: NncfInt8Config) -> list[str]:
    """NNCF's quantize_with_accuracy_control, Dice on the calibration stacks vs the FP32 model's masks."""
    onnx = require("onnx")
    nncf = require("nncf")
    ort = require("onnxruntime", extra="runtime")
    out_name = fp32.outputs[0].name
    items = [(x, fp32.run({name: x})[out_name].argmax(1)) for x in calib]

    def validate(model: Any, data: Any) -> float:
        sess = model if hasattr(model, "get_inputs") else ort.InferenceSession(
            model.SerializeToString(), providers=["CPUExecutionProvider"])
        hits = total = 0
        for x, ref in data:
            pred = sess.run(None, {name: x})[0].argmax(1)
            for o in organs:
                p, r = pred == o.channel, ref == o.channel
                hits += 2 * int((p & r).sum())
                total += int(p.sum() + r.sum())
        return hits / total if total else 1.0

    preset = nncf.QuantizationPreset.MIXED if config.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE
    kwargs: dict[str, Any] = {}
    if config.ignored_layers:
        kwargs["ignored_scope"] = nncf.IgnoredScope(names=list(config.ignored_layers))
    before = {n.name for n in onnx.load(str(src)).graph.node}
    quantized = nncf.quantize_with_accuracy_control(
        onnx.load(str(src)), nncf.Dataset(calib, lambda x: {name: x}), nncf.Dataset(items), validate,
        max_drop=config.max_dice_drop, drop_type=nncf.DropType.ABSOLUTE, preset=preset, subset_size=len(calib),
        fast_bias_correction=config.fast_bias_correction, **kwargs)
    onnx.save(quantized, str(dst))
    quantized_inputs = {n.output[0] for n in quantized.graph.node if n.op_type == "DequantizeLinear"}
    return sorted(n.name for n in quantized.graph.node if n.name in before and n.op_type in ("Conv", "ConvTranspose")
                  and not any(i in quantized_inputs for i in n.input))


def _check_qat_student(config: NncfQatConfig, bundle: Any) -> None:
    from edgemed.artifacts import StudentCheckpoint

    ckpt = StudentCheckpoint.load(config.student)
    exported_from = bundle.meta.student.digest
    if exported_from and ckpt.manifest.digest != exported_from:
        raise InputError(f"{bundle.path} was not exported from {ckpt.path} (student digest {exported_from[:12]}… vs "
                         f"{ckpt.manifest.digest[:12]}…); pass the student checkpoint the bundle came from.")


def fold_batchnorm_(net: Any) -> int:
    """Fold every BatchNorm that directly follows a convolution in a Sequential into that conv.

    What ONNX export does anyway; done before QAT, the fake weight quantizers see the weights
    that will be deployed. Returns the number of folds.
    """
    torch = require("torch")
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    folds = 0
    for seq in [m for m in net.modules() if isinstance(m, torch.nn.Sequential)]:
        names = list(seq._modules)
        for a, b in zip(names, names[1:]):
            conv, bn = seq._modules[a], seq._modules[b]
            if isinstance(conv, torch.nn.Conv2d) and isinstance(bn, torch.nn.BatchNorm2d) and bn.track_running_stats:
                seq._modules[a] = fuse_conv_bn_eval(conv.eval(), bn.eval())
                seq._modules[b] = torch.nn.Identity()
                folds += 1
    return folds


def _quantize_nncf_qat(src: Path, dst: Path, calib: list[np.ndarray], name: str, config: NncfQatConfig,
                       ctx: Any = None) -> None:
    """PTQ-initialised fake quantizers, distilled from the FP32 student on the calibration stacks, QDQ-exported.

    Under torchrun the fine-tuning runs in DistributedDataParallel: every process draws the same
    permutation of the stacks and trains on its share of each batch (DistributedSampler's rule);
    a last batch smaller than the number of processes is dropped. Rank 0 exports the model.
    """
    import copy
    import warnings

    torch = require("torch")
    os.environ.setdefault("NNCF_EXTENSION_LOAD_TIMEOUT", "900")  # first use compiles a C++ extension (~1 min)
    nncf = require("nncf")
    from nncf.torch.quantization.layers import BaseQuantizer, QuantizerExportMode

    from edgemed.artifacts import StudentCheckpoint
    from edgemed.compress._losses import distill_loss
    from edgemed.compress._progress import progress_bar
    from edgemed.models import load_student

    fp32 = load_student(StudentCheckpoint.load(config.student)).eval()
    fold_batchnorm_(fp32)
    x_all = torch.from_numpy(_stack_padded(calib))
    with torch.no_grad():
        logits = torch.cat([fp32(x_all[i:i + _BATCH]) for i in range(0, len(x_all), _BATCH)])
    soft = torch.softmax(logits / config.temperature, 1)
    hard = torch.nn.functional.one_hot(logits.argmax(1), logits.shape[1]).permute(0, 3, 1, 2).float()
    qnet = nncf.quantize(copy.deepcopy(fp32), nncf.Dataset(list(x_all.split(_BATCH))),
                         preset=nncf.QuantizationPreset.PERFORMANCE, subset_size=-(-len(x_all) // _BATCH))
    from edgemed.compress._dist import SINGLE

    ctx = ctx or SINGLE
    model = ctx.wrap(qnet)
    opt = torch.optim.AdamW(qnet.parameters(), lr=config.lr, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in progress_bar(range(config.epochs), ctx.is_main, desc="QAT", unit="epoch"):
        for idx in torch.randperm(len(x_all), generator=gen).split(config.batch_size):
            if len(idx) < ctx.world_size:
                continue  # every process needs a share, or the gradient all-reduce would wait forever
            idx = idx[ctx.share(len(idx))]
            loss = distill_loss(model(x_all[idx].to(ctx.device)), soft[idx].to(ctx.device), hard[idx].to(ctx.device),
                                temperature=config.temperature, soft=True, dice_weight=1.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    qnet = qnet.cpu().eval()
    if not ctx.is_main:
        return
    for m in qnet.modules():
        if isinstance(m, BaseQuantizer):
            m.set_export_mode(QuantizerExportMode.ONNX_QUANTIZE_DEQUANTIZE_PAIRS)
    onnx = require("onnx")
    opset = next((o.version for o in onnx.load(str(src)).opset_import if o.domain in ("", "ai.onnx")), 17)
    axes = {0: "batch", 2: "height", 3: "width"}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice; chosen as in edgemed.export
        torch.onnx.export(qnet, (x_all[:1],), str(dst), input_names=[name], output_names=["logits"],
                          opset_version=opset, dynamic_axes={name: axes, "logits": axes}, do_constant_folding=True,
                          dynamo=False)


_HANDLERS = {NncfInt8Config: _quantize_nncf, OrtInt8Config: _quantize_ort, NncfQatConfig: _quantize_nncf_qat}
