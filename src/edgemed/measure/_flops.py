"""FLOPs and parameters of an ONNX graph, counted from its shapes (numpy + onnx only).

Only the operators that dominate a convolutional segmentation network are counted: Conv,
ConvTranspose, MatMul and Gemm, each as 2 x multiply-accumulates (bias additions, activations,
normalisation and resampling are left out, as in the usual "FLOPs" of a CNN). Shapes come from
`onnx.shape_inference` run on a copy of the graph whose symbolic input dimensions are fixed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgemed.errors import ArtifactError, ConfigError

__all__ = ["COUNTED_OPS", "FlopCount", "count_flops", "count_parameters"]

COUNTED_OPS = ("Conv", "ConvTranspose", "MatMul", "Gemm")


@dataclass(frozen=True)
class FlopCount:
    """The FLOPs of one run of a graph on concrete input shapes.

    Attributes:
        flops: 2 x MACs over every counted node.
        macs: Multiply-accumulates over every counted node.
        by_op: FLOPs per operator type, e.g. {"Conv": 1.2e9, "ConvTranspose": 3.1e8}.
        uncounted_nodes: Counted-type nodes whose shapes could not be inferred (their FLOPs are missing).
        input_shapes: The concrete input shapes the count is for.
    """

    flops: int
    macs: int
    by_op: Mapping[str, int] = field(default_factory=dict)
    uncounted_nodes: tuple[str, ...] = ()
    input_shapes: Mapping[str, tuple[int, ...]] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"flops": self.flops, "macs": self.macs, "by_op": dict(self.by_op),
                "uncounted_nodes": list(self.uncounted_nodes),
                "input_shapes": {k: list(v) for k, v in self.input_shapes.items()}}


def count_parameters(model: str | os.PathLike[str] | Any) -> int:
    """The number of weights: the summed sizes of the graph's initializers.

    Args:
        model: An ONNX file or a loaded `onnx.ModelProto`.

    Raises:
        ArtifactError: The file is not a readable ONNX model.
    """
    proto = _load(model)
    return int(sum(int(np.prod(init.dims, dtype=np.int64)) for init in proto.graph.initializer))


def count_flops(model: str | os.PathLike[str] | Any, input_shapes: Mapping[str, Sequence[int]]) -> FlopCount:
    """Count the FLOPs of one run of `model` on inputs of `input_shapes`.

    Args:
        model: An ONNX file or a loaded `onnx.ModelProto` (not modified).
        input_shapes: Concrete shape per graph input, e.g. {"image": (1, 3, 64, 64)}; it fixes the
            symbolic dimensions ("batch", "height", "width") before shape inference.

    Returns:
        The count; divide by the batch size for FLOPs per slice.

    Raises:
        ConfigError: An input name is unknown, or a shape has the wrong rank or contradicts a fixed size.
        ArtifactError: The file is not a readable ONNX model, or shape inference fails.

    Example:
        >>> count_flops("out/liver.edgemed/model.onnx", {"image": (1, 3, 64, 64)}).flops
        412876800
    """
    graph, shapes, fixed = _infer(model, input_shapes)
    flops_by_op: dict[str, int] = {}
    total_macs = 0
    missing: list[str] = []
    for node in graph.node:
        if node.op_type not in COUNTED_OPS:
            continue
        macs = _node_macs(node, shapes)
        if macs is None:
            missing.append(node.name or f"{node.op_type}->{node.output[0]}")
            continue
        total_macs += macs
        flops_by_op[node.op_type] = flops_by_op.get(node.op_type, 0) + 2 * macs
    return FlopCount(flops=2 * total_macs, macs=total_macs, by_op=flops_by_op, uncounted_nodes=tuple(missing),
                     input_shapes=fixed)


def _infer(model: str | os.PathLike[str] | Any, input_shapes: Mapping[str, Sequence[int]]
           ) -> tuple[Any, dict[str, tuple[int, ...]], dict[str, tuple[int, ...]]]:
    """Shape-infer `model` on concrete input shapes: (graph, static shape per tensor name, inputs fixed)."""
    import onnx

    proto = onnx.ModelProto()
    proto.CopyFrom(_load(model))
    inits = {init.name: tuple(int(d) for d in init.dims) for init in proto.graph.initializer}
    graph_inputs = [i for i in proto.graph.input if i.name not in inits]
    names = [i.name for i in graph_inputs]
    unknown = sorted(set(input_shapes) - set(names))
    if unknown:
        raise ConfigError(f"input_shapes names {unknown}, but the model's inputs are {names}.")
    fixed: dict[str, tuple[int, ...]] = {}
    for value in graph_inputs:
        if value.name not in input_shapes:
            continue
        shape = tuple(int(d) for d in input_shapes[value.name])
        dims = value.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            raise ConfigError(f"input {value.name!r} has {len(dims)} dimensions; got shape {shape}.")
        for axis, (dim, size) in enumerate(zip(dims, shape)):
            if dim.HasField("dim_value") and dim.dim_value != size:
                raise ConfigError(f"input {value.name!r} is fixed at {dim.dim_value} on axis {axis}; got {size}.")
            dim.Clear()
            dim.dim_value = size
        fixed[value.name] = shape
    try:
        inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    except Exception as err:  # onnx raises its own InferenceError and plain RuntimeErrors
        raise ArtifactError(f"ONNX shape inference failed ({err}); check the model with onnx.checker "
                            "or re-export it.") from err
    shapes = dict(inits)
    graph = inferred.graph
    for value in [*graph.input, *graph.value_info, *graph.output]:
        shape = _static_shape(value)
        if shape is not None:
            shapes[value.name] = shape
    return graph, shapes, fixed


def _load(model: str | os.PathLike[str] | Any) -> Any:
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    path = Path(model)
    if not path.is_file():
        raise ArtifactError(f"{path} is not a file; pass an ONNX model (e.g. out/liver.edgemed/model.onnx).")
    try:
        return onnx.load(str(path))
    except Exception as err:  # protobuf DecodeError and friends
        raise ArtifactError(f"{path} is not a readable ONNX model ({err}); re-export it.") from err


def _static_shape(value: Any) -> tuple[int, ...] | None:
    tensor = value.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    dims = []
    for dim in tensor.shape.dim:
        if not dim.HasField("dim_value"):
            return None
        dims.append(int(dim.dim_value))
    return tuple(dims)


def _attr(node: Any, name: str, default: Any) -> Any:
    import onnx

    for attr in node.attribute:
        if attr.name == name:
            return onnx.helper.get_attribute_value(attr)
    return default


def _node_macs(node: Any, shapes: Mapping[str, tuple[int, ...]]) -> int | None:
    """Multiply-accumulates of one node, or None when a needed shape is unknown."""
    ins = [shapes.get(name) if name else None for name in node.input]
    out = shapes.get(node.output[0])
    prod = lambda dims: int(np.prod(dims, dtype=np.int64))  # noqa: E731
    if node.op_type == "Conv":
        weight = ins[1] if len(ins) > 1 else None
        if weight is None or out is None:
            return None
        # Each output element: (Cin / group) x kernel MACs; weight is (Cout, Cin/group, *kernel).
        return prod(out) * prod(weight[1:])
    if node.op_type == "ConvTranspose":
        x, weight = ins[0], ins[1] if len(ins) > 1 else None
        if x is None or weight is None:
            return None
        # Each input element scatters into (Cout / group) x kernel outputs; weight is (Cin, Cout/group, *kernel).
        return prod(x) * prod(weight[1:])
    if node.op_type == "MatMul":
        a = ins[0]
        if a is None or out is None:
            return None
        return prod(out) * (a[-1] if len(a) >= 1 else 1)
    if node.op_type == "Gemm":
        a = ins[0]
        if a is None or out is None or len(a) != 2:
            return None
        k = a[0] if int(_attr(node, "transA", 0)) else a[1]
        return prod(out) * k
    return None
