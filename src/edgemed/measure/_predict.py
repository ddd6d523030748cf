"""Latency prediction for targets not at hand: per-node FLOPs and bytes from the ONNX graph, a roofline
per target, and efficiencies calibrated on measured runs (numpy + onnx; no torch).

Each convolution costs FLOPs / (peak x efficiency of its kind): dense 2D, dense 3D, depthwise and
transposed convolutions each run at their own share of peak (measured: a 3D conv and a depthwise
conv differ several-fold in achieved rate on the same CPU). Every node also moves its bytes
(inputs, outputs, weights at the precision's element size) at a memory efficiency, and costs a
fixed overhead (kernel launch, scheduling). Compute and memory time add: on CPUs a conv's loads and
FMAs share the same cores and these small layers do not hide one behind the other (the sum fitted
better than the max). The parameters are fitted by least squares on log latency to runs measured on
a target of the same class (a CPU backend, a GPU backend) and precision; a conv kind absent from
the runs takes the dense 2D efficiency. The figure is always labelled *predicted*, with the
calibration it used.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgemed.errors import ConfigError
from edgemed.measure._flops import COUNTED_OPS, _infer, _node_macs
from edgemed.profiles import Precision, TargetProfile

__all__ = ["DEFAULT_CALIBRATIONS", "Calibration", "GraphCost", "LatencyPrediction", "fit_calibration", "graph_cost",
           "load_calibration", "shipped_calibrations", "CALIBRATIONS_DIR", "predict_bundle", "predict_latency"]

#: Nodes the backends fold away or that move no data (quantize/dequantize pairs fuse into INT8 kernels).
_FREE_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "Identity", "Constant", "Shape", "Reshape", "Squeeze",
                       "Unsqueeze", "Flatten", "Cast"})
_BYTES = {Precision.FP32: 4, Precision.TF32: 4, Precision.FP16: 2, Precision.INT8: 1}


@dataclass(frozen=True)
class GraphCost:
    """Work of one run of a graph: per-node FLOPs and bytes moved at a precision.

    Attributes:
        flops: Per executed node, 2 x MACs (Conv/ConvTranspose/MatMul/Gemm) or one op per output
            element (everything else).
        bytes: Per executed node, inputs + outputs + weights at the precision's element size.
        op_types: Per executed node, its operator.
        kinds: Per executed node, "conv2d", "conv3d", "depthwise", "deconv" or "other".
    """

    flops: np.ndarray
    bytes: np.ndarray
    op_types: tuple[str, ...]
    kinds: tuple[str, ...] = ()

    @property
    def nodes(self) -> int:
        """Executed nodes."""
        return len(self.op_types)


def graph_cost(model: str | os.PathLike[str] | Any, input_shapes: Mapping[str, Sequence[int]],
               precision: Precision | str = Precision.FP32) -> GraphCost:
    """Per-node FLOPs and bytes of `model` on concrete `input_shapes` (weights and activations at `precision`).

    Raises:
        ConfigError / ArtifactError: As `count_flops`.
    """
    graph, shapes, _ = _infer(model, input_shapes)
    size = _BYTES[Precision(precision)]
    flops, moved, ops, kinds = [], [], [], []
    for node in graph.node:
        if node.op_type in _FREE_OPS:
            continue
        out = shapes.get(node.output[0]) if node.output else None
        if node.op_type in COUNTED_OPS:
            macs = _node_macs(node, shapes)
            f = 2.0 * macs if macs is not None else 0.0
        else:
            f = float(math.prod(out)) if out else 0.0
        tensors = [*node.input, *node.output]
        b = sum(math.prod(shapes[t]) for t in tensors if t and t in shapes)
        flops.append(f)
        moved.append(float(size * b))  # weights once, activations in and out, at the element size
        ops.append(node.op_type)
        kinds.append(_kind(node, shapes))
    return GraphCost(np.asarray(flops), np.asarray(moved), tuple(ops), tuple(kinds))


def _kind(node: Any, shapes: Mapping[str, tuple[int, ...]]) -> str:
    """"conv2d", "conv3d", "depthwise", "deconv" or "other": kernels of each kind run at their own efficiency."""
    if node.op_type not in ("Conv", "ConvTranspose") or len(node.input) < 2 or not shapes.get(node.input[1]):
        return "other"
    w = shapes[node.input[1]]
    if node.op_type == "ConvTranspose":
        return "deconv"
    if w[1] == 1 and w[0] > 1:
        return "depthwise"
    return "conv3d" if len(w) == 5 else "conv2d"


@dataclass(frozen=True)
class Calibration:
    """Efficiencies of a backend on a class of targets, fitted on measured runs.

    Attributes:
        backend: e.g. "openvino", "ort", "trt".
        precision: The precision the runs used.
        compute_efficiency: Achieved share of peak compute in compute-bound nodes.
        memory_efficiency: Achieved share of peak bandwidth in memory-bound nodes.
        overhead_us_per_node: Fixed cost per executed node.
        kind_efficiency: Efficiency of "conv3d", "depthwise" and "deconv" convolutions where
            measured (a kind not listed runs at `compute_efficiency`, the dense 2D conv's).
        fitted_on: What was measured: [{"model", "target", "measured_ms", "predicted_ms"}, ...]
            (empty for defaults that no measurement backs).
        note: Where the numbers come from.
    """

    backend: str
    precision: str
    compute_efficiency: float
    memory_efficiency: float
    overhead_us_per_node: float
    kind_efficiency: Mapping[str, float] = field(default_factory=dict)
    fitted_on: tuple[dict[str, Any], ...] = ()
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        raw = asdict(self)
        raw["fitted_on"] = list(self.fitted_on)
        raw["kind_efficiency"] = dict(self.kind_efficiency)
        return raw

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> "Calibration":
        """The inverse of `to_json`."""
        return cls(**{**raw, "fitted_on": tuple(raw.get("fitted_on", ()))})


#: Used when no measured run backs a (backend, precision): GPU engines reach roughly a third of
#: tensor-core peak on small 2D CNNs, CPUs about half their FMA peak; ~5 µs launch per layer on a GPU.
DEFAULT_CALIBRATIONS: dict[str, Calibration] = {
    "gpu": Calibration("trt", "any", 0.30, 0.60, 5.0, {"depthwise": 0.05},
                       note="uncalibrated default (no measured GPU runs)"),
    "cpu": Calibration("any", "any", 0.45, 0.50, 20.0, {"depthwise": 0.05},
                       note="uncalibrated default (no measured CPU runs)"),
}


@dataclass(frozen=True)
class LatencyPrediction:
    """A predicted latency (never a measurement) and how it was reached."""

    target: str
    precision: str
    latency_ms: float
    compute_ms: float
    memory_ms: float
    overhead_ms: float
    nodes: int
    calibration: Calibration
    label: str = "predicted"
    bound_by: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"label": self.label, "target": self.target, "precision": self.precision,
                "latency_ms": round(self.latency_ms, 3), "compute_ms": round(self.compute_ms, 3),
                "memory_ms": round(self.memory_ms, 3), "overhead_ms": round(self.overhead_ms, 3),
                "nodes": self.nodes, "bound_by": dict(self.bound_by), "calibration": self.calibration.to_json()}


_CONV_KINDS = ("conv2d", "conv3d", "depthwise", "deconv")


def _roofline_ms(cost: GraphCost, peak_ops: float, bandwidth_bps: float, cal: Calibration
                 ) -> tuple[float, float, float, float, np.ndarray]:
    kinds = np.asarray(cost.kinds) if cost.kinds else np.full(cost.nodes, "conv2d")
    eff = np.array([cal.kind_efficiency.get(k, cal.compute_efficiency) for k in kinds])
    t_c = np.where(kinds == "other", 0.0, cost.flops / (peak_ops * eff))
    t_m = cost.bytes / (bandwidth_bps * cal.memory_efficiency)
    overhead = cost.nodes * cal.overhead_us_per_node * 1e-6
    return 1e3 * (t_c.sum() + t_m.sum() + overhead), 1e3 * t_c.sum(), 1e3 * t_m.sum(), 1e3 * overhead, t_c >= t_m


def predict_latency(cost: GraphCost, target: TargetProfile, precision: Precision | str,
                    calibration: Calibration | None = None) -> LatencyPrediction:
    """Predict one run's latency on `target` from the graph's cost.

    Args:
        cost: From `graph_cost` (at the same precision).
        target: The target profile (its peaks and bandwidth).
        precision: The precision the model runs in; must be one the target runs.
        calibration: Efficiencies fitted on measured runs; default: the uncalibrated default of
            the target's class (recorded as such).

    Raises:
        ConfigError: The target does not run `precision`.
    """
    p = Precision(precision)
    if p not in target.precisions:
        raise ConfigError(f"{target.id} does not run {p.value}; it runs "
                          f"{', '.join(sorted(x.value for x in target.precisions))}.")
    cal = calibration or DEFAULT_CALIBRATIONS[target.accelerator.value]
    total, comp, mem, over, compute_bound = _roofline_ms(cost, target.peak_ops(p), target.memory_bandwidth_gbs * 1e9,
                                                         cal)
    return LatencyPrediction(target=target.id, precision=p.value, latency_ms=total, compute_ms=comp, memory_ms=mem,
                             overhead_ms=over, nodes=cost.nodes, calibration=cal,
                             bound_by={"compute": int(compute_bound.sum()), "memory": int((~compute_bound).sum())})


def fit_calibration(runs: Sequence[tuple[str, GraphCost, float]], target: TargetProfile, precision: Precision | str,
                    backend: str) -> Calibration:
    """Fit compute/memory efficiency and per-node overhead to measured runs (least squares on log latency).

    Args:
        runs: (model name, its cost at `precision`, measured ms) on `target` with `backend`.
        target: Where they were measured (its peaks, e.g. the measured host profile).

    Raises:
        ConfigError: No runs given.
    """
    if not runs:
        raise ConfigError("no measured runs to calibrate on; measure at least one model on the target.")
    p = Precision(precision)
    peak, bw = target.peak_ops(p), target.memory_bandwidth_gbs * 1e9
    measured = np.log([ms for _, _, ms in runs])

    kinds = [k for k in _CONV_KINDS[1:] if any(k in c.kinds for _, c, _ in runs)]

    def make(theta: np.ndarray) -> Calibration:
        return Calibration(backend=backend, precision=p.value, compute_efficiency=float(theta[0]),
                           memory_efficiency=float(theta[1]), overhead_us_per_node=float(theta[2]),
                           kind_efficiency={k: float(v) for k, v in zip(kinds, theta[3:])})

    def loss(theta: np.ndarray) -> float:
        cal = make(theta)
        pred = np.log([_roofline_ms(c, peak, bw, cal)[0] for _, c, _ in runs])
        return float(((pred - measured) ** 2).sum())

    # Multiplicative coordinate descent from a few starts: a handful of parameters, no scipy needed.
    best: tuple[float, np.ndarray] | None = None
    for start in ((0.3, 0.3, 20.0), (0.1, 1.0, 5.0), (0.6, 0.1, 50.0)):
        theta = np.array([*start, *[start[0]] * len(kinds)], dtype=float)
        current = loss(theta)
        for _ in range(40):
            improved = False
            for i in range(len(theta)):
                for factor in (0.5, 0.8, 0.95, 1.05, 1.25, 2.0):
                    trial = theta.copy()
                    trial[i] *= factor
                    value = loss(trial)
                    if value < current - 1e-12:
                        theta, current, improved = trial, value, True
            if not improved:
                break
        if best is None or current < best[0]:
            best = (current, theta)
    assert best is not None
    fitted_cal = make(np.round(best[1], 4))
    fitted = tuple({"model": n, "target": target.id, "measured_ms": round(ms, 3),
                    "predicted_ms": round(_roofline_ms(c, peak, bw, fitted_cal)[0], 3)} for n, c, ms in runs)
    return Calibration(backend=backend, precision=p.value, compute_efficiency=fitted_cal.compute_efficiency,
                       memory_efficiency=fitted_cal.memory_efficiency,
                       overhead_us_per_node=fitted_cal.overhead_us_per_node, kind_efficiency=fitted_cal.kind_efficiency,
                       fitted_on=fitted, note=f"fitted on {len(runs)} run(s) measured on {target.id}")


#: Calibrations shipped with edgemed: fitted on measured runs of the zoo on the x86-64 CPU that
#: benchmarks/suite/predict_latency.py ran on (package data, one file per backend and precision).
CALIBRATIONS_DIR = Path(__file__).resolve().parent / "calibrations"


def shipped_calibrations() -> tuple[str, ...]:
    """Names of the calibrations shipped with edgemed, e.g. "host_ort_int8" (`load_calibration` takes them)."""
    return tuple(sorted(p.stem.removeprefix("calibration_") for p in CALIBRATIONS_DIR.glob("calibration_*.json")))


def load_calibration(path: str | os.PathLike[str]) -> Calibration:
    """Read a calibration written by `Calibration.to_json`: a file, or a shipped name ("host_ort_int8").

    Raises:
        ConfigError: Neither a readable calibration file nor a shipped name.
    """
    shipped = CALIBRATIONS_DIR / f"calibration_{path}.json"
    if not Path(path).exists() and isinstance(path, str) and path in shipped_calibrations():
        path = shipped
    try:
        return Calibration.from_json(json.loads(Path(path).read_text()))
    except (OSError, ValueError, TypeError) as err:
        raise ConfigError(f"{path} is not a calibration JSON ({err}); shipped calibrations: "
                          f"{', '.join(shipped_calibrations())}.") from err


def predict_bundle(bundle: Any, scan: Any, target: TargetProfile, *, calibration: Calibration | None = None,
                   precision: Precision | str | None = None, batch: int = 16) -> dict[str, Any]:
    """Predicted inference latency of a bundle on one scan's slices, on a target not at hand.

    The scan fixes the work (its slices on the student grid, the body crop's size); the bundle's
    precision is used unless `precision` says otherwise (e.g. "fp16" for an FP32 bundle that
    TensorRT will build in FP16).

    Returns:
        {"label": "predicted", "per_batch": LatencyPrediction JSON, "batches", "volume_inference_ms", ...}
    """
    from edgemed.io import Volume, read_volume, student_grid_geometry
    from edgemed.runtime import OnnxBundle

    b = bundle if isinstance(bundle, OnnxBundle) else OnnxBundle.load(bundle)
    volume = scan if isinstance(scan, Volume) else read_volume(scan)
    geom = student_grid_geometry(volume, b.preprocess)
    p = Precision(precision or b.precision)
    slices = volume.shape[2]
    fixed = b.inputs[0].shape[0]
    n = fixed if isinstance(fixed, int) else min(batch, slices)
    cost = graph_cost(b.model_path, {b.inputs[0].name: (n, b.preprocess.in_channels, *geom.padded_hw)}, p)
    pred = predict_latency(cost, target, p, calibration)
    batches = -(-slices // n)
    return {"label": "predicted", "target": target.id, "precision": p.value, "slices": slices, "batch": n,
            "batches": batches, "per_batch": pred.to_json(), "volume_inference_ms": round(batches * pred.latency_ms, 2),
            "note": "inference only (preprocessing and resampling run on the host CPU and are not predicted)"}
