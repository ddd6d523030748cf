"""Deliberately worse copies of a bundle, to prove a gate catches what it should (needs the onnx package).

`make_slower_bundle` appends identity 3x3 convolutions to the logits: the masks are bit-identical
and only the work grows. `make_biased_bundle` adds a per-class bias to the logits: the model is
exactly as fast and its masks shift (a background bias shrinks every organ). Both write a normal
bundle (hashed manifest, lineage to the source) whose metadata records what was done to it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgemed._deps import require
from edgemed.errors import ConfigError

__all__ = ["make_biased_bundle", "make_slower_bundle"]

PathLike = str | os.PathLike[str]


def make_slower_bundle(bundle: Any, out: PathLike, *, width: int = 16, layers: int = 1, overwrite: bool = False) -> Any:
    """A copy of an ONNX bundle that does more work for the same masks.

    Each of `layers` blocks is a 3x3 conv from the K logit channels to `width` channels and one
    back, with identity kernels (1 at the centre tap of channel k → k, 0 elsewhere): exact in
    float arithmetic, so the output equals the original's, while the added multiply-adds
    (2 x K x width x 9 per pixel and block) slow every slice.

    Args:
        bundle: An ONNX bundle directory or `OnnxBundle` (not a TensorRT engine).
        out: The bundle directory to write.
        width: Channels of the hidden layer of each block (>= the logit channels).
        layers: Blocks appended.
        overwrite: Replace a bundle already at `out` (else it is refused, as everywhere in edgemed).

    Returns:
        The written `OnnxBundle`.

    Example:
        >>> slow = make_slower_bundle("out/liver.edgemed", "/tmp/liver-slow.edgemed", width=24)
    """
    src, model, k = _open(bundle)
    if width < k or layers < 1:
        raise ConfigError(f"width={width} must be >= the {k} logit channels and layers={layers} >= 1.")
    onnx = require("onnx")
    nh = onnx.numpy_helper
    up, down = np.zeros((width, k, 3, 3), np.float32), np.zeros((k, width, 3, 3), np.float32)
    for c in range(k):
        up[c, c, 1, 1] = down[c, c, 1, 1] = 1.0
    graph = model.graph
    graph.initializer.extend([nh.from_array(up, "edgemed_slow_up"), nh.from_array(down, "edgemed_slow_down")])
    name = _detach_output(graph)
    for i in range(layers):
        hidden, last = f"edgemed_slow_h{i}", i == layers - 1
        nxt = graph.output[0].name if last else f"edgemed_slow_o{i}"
        graph.node.extend([
            onnx.helper.make_node("Conv", [name, "edgemed_slow_up"], [hidden], f"edgemed_slow_up{i}",
                                  pads=[1, 1, 1, 1]),
            onnx.helper.make_node("Conv", [hidden, "edgemed_slow_down"], [nxt], f"edgemed_slow_down{i}",
                                  pads=[1, 1, 1, 1])])
        name = nxt
    return _write(src, model, out, {"kind": "slower", "width": width, "layers": layers,
                                    "note": "identity convolutions appended to the logits: same masks, more work"},
                  overwrite=overwrite)


def make_biased_bundle(bundle: Any, out: PathLike, *, bias: Sequence[float], overwrite: bool = False) -> Any:
    """A copy of an ONNX bundle whose logits get a constant per-class bias (same speed, shifted masks).

    Args:
        bundle: An ONNX bundle directory or `OnnxBundle`.
        out: The bundle directory to write.
        bias: One value per output class (background first); e.g. (0.5, 0) shrinks a one-organ
            model's masks.
        overwrite: Replace a bundle already at `out` (else it is refused, as everywhere in edgemed).

    Returns:
        The written `OnnxBundle`.

    Example:
        >>> worse = make_biased_bundle("out/liver.edgemed", "/tmp/liver-biased.edgemed", bias=(0.4, 0.0))
    """
    src, model, k = _open(bundle)
    values = np.asarray(bias, dtype=np.float32)
    if values.shape != (k,):
        raise ConfigError(f"bias needs one value per output class ({k}: background + organs), got {list(bias)}.")
    onnx = require("onnx")
    graph = model.graph
    graph.initializer.append(onnx.numpy_helper.from_array(values.reshape(1, k, 1, 1), "edgemed_logit_bias"))
    name = _detach_output(graph)
    graph.node.append(onnx.helper.make_node("Add", [name, "edgemed_logit_bias"], [graph.output[0].name],
                                            "edgemed_logit_bias_add"))
    return _write(src, model, out, {"kind": "biased", "bias": [float(v) for v in values],
                                    "note": "a constant added to the logits: same work, shifted masks"},
                  overwrite=overwrite)


def _open(bundle: Any) -> tuple[Any, Any, int]:
    from edgemed.runtime import OnnxBundle, open_bundle

    src = open_bundle(bundle.path if isinstance(bundle, OnnxBundle) else bundle)
    if src.format != "onnx":
        raise ConfigError(f"{src.path} holds a {src.format} model; make the variant from the ONNX bundle it was "
                          "built from, then rebuild it.")
    onnx = require("onnx")
    model = onnx.load(str(src.model_path))
    return src, model, len(src.organs) + 1


def _detach_output(graph: Any) -> str:
    """Rename the tensor the graph's output is produced as; return the new name (new nodes consume it)."""
    out = graph.output[0].name
    raw = f"{out}_before_variant"
    for node in graph.node:
        node.output[:] = [raw if o == out else o for o in node.output]
    return raw


def _write(src: Any, model: Any, out: PathLike, record: dict[str, Any], *, overwrite: bool) -> Any:
    from edgemed.artifacts import BUNDLE_KIND, BUNDLE_SCHEMA, OnnxBundle, write_artifact

    onnx = require("onnx")
    onnx.checker.check_model(model, full_check=True)
    metadata = src.meta.with_(variant={**record, "of": src.manifest.digest, "of_name": src.path.name})
    write_artifact(out, kind=BUNDLE_KIND, schema_version=BUNDLE_SCHEMA,
                   payload={src.meta.model: model.SerializeToString()}, metadata=metadata.to_json(),
                   parent=src.manifest.digest, overwrite=overwrite)
    return OnnxBundle.load(out)
