"""Structured channel pruning of students with torch-pruning (DepGraph), stored without pickle.

A pruned student is its zoo architecture with fewer channels per layer. The checkpoint keeps the
zoo spec plus `"pruned": true`; on load the network is built from the spec and every Conv /
ConvTranspose / BatchNorm is resized to the shapes in the safetensors weights (see
`edgemed.models.resize_to_state`), so no module is ever pickled.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from edgemed._deps import require
from edgemed.artifacts import STUDENT_KIND, StudentCheckpoint, write_artifact
from edgemed.errors import ConfigError

__all__ = ["PruneConfig", "concat_sizes_from_tensors", "prune"]

_IMPORTANCE = ("magnitude", "bn_scale", "taylor")


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneConfig:
    """Channel pruning of a student.

    Attributes:
        ratio: Share of channels removed from every prunable layer (0.5 halves them; FLOPs drop
            to about a quarter, as both a conv's inputs and outputs shrink).
        importance: "magnitude" (L2 norm of each channel's weights), "bn_scale" (|gamma| of the
            following BatchNorm) or "taylor" (|weight x gradient| on calibration batches).
        iterative_steps: Prune in this many equal steps (importance re-measured between steps).
        round_to: Keep channel counts multiples of this (SIMD / tensor-core friendly).
    """

    ratio: float = 0.5
    importance: str = "magnitude"
    iterative_steps: int = 1
    round_to: int = 4

    def __post_init__(self) -> None:
        if not 0.0 < self.ratio < 0.95:
            raise ConfigError(f"ratio={self.ratio} must be in (0, 0.95); 0.5 removes half the channels.")
        if self.importance not in _IMPORTANCE:
            raise ConfigError(f"importance={self.importance!r}; use one of {', '.join(_IMPORTANCE)}.")
        if self.iterative_steps < 1 or self.round_to < 1:
            raise ConfigError("iterative_steps and round_to must be >= 1.")


@contextlib.contextmanager
def concat_sizes_from_tensors() -> Iterator[None]:
    """Give torch-pruning the real input channels of every concatenation (a fix for MONAI networks).

    torch-pruning infers a concat's input channel counts by walking the traced graph back from
    each input; through MONAI's `SkipConnection` and residual units that walk returns None and
    1.6.x crashes in `update_concat_index_mapping` (`int + NoneType`) on UNet and BasicUNet. The
    sizes are known exactly when the concat runs: while this context is active, `torch.cat`
    records its inputs' channels under the autograd node of its output — the very node the
    dependency graph stores as `node.grad_fn` — and the concat mapping is given those sizes
    instead of inferring them. Nothing changes for graphs torch-pruning already handles.
    """
    torch = require("torch")
    index_mapping = require("torch_pruning.dependency.index_mapping")

    sizes: dict[Any, list[int]] = {}
    real_cat, real_update = torch.cat, index_mapping.update_concat_index_mapping

    def cat(tensors: Any, dim: int = 0, *args: Any, **kwargs: Any) -> Any:
        out = real_cat(tensors, dim, *args, **kwargs)
        if getattr(out, "grad_fn", None) is not None and out.dim() >= 2 and dim in (1, 1 - out.dim()):
            sizes[out.grad_fn] = [int(t.shape[1]) for t in tensors]
        return out

    def update(graph: Any, cat_node: Any) -> Any:
        known = sizes.get(getattr(cat_node, "grad_fn", None))
        if known is not None and getattr(cat_node.module, "concat_sizes", None) is None \
                and len(known) == len(cat_node.inputs):
            cat_node.module.concat_sizes = known
        return real_update(graph, cat_node)

    torch.cat, index_mapping.update_concat_index_mapping = cat, update
    try:
        yield
    finally:
        torch.cat, index_mapping.update_concat_index_mapping = real_cat, real_update


def prune(student: StudentCheckpoint | str | os.PathLike[str], config: PruneConfig,
          out: str | os.PathLike[str], *, example_batches: Any = None) -> StudentCheckpoint:
    """Remove channels from a student (the output head is never pruned) and write a new checkpoint.

    The pruned student has not been fine-tuned: distill it again from the unpruned one
    (`distill(..., teacher=StudentTeacher(unpruned), init=pruned)`) to recover accuracy.

    Args:
        student: The student checkpoint (or its directory).
        config: Ratio, importance criterion and steps.
        out: The checkpoint directory to write.
        example_batches: For "taylor": a list of (N, C, H, W) float arrays (real slices) whose
            soft-Dice-free loss gradient (mean logit energy) ranks channels; default: random input.

    Returns:
        The pruned checkpoint; its manifest records parameters and FLOPs before and after.
    """
    torch = require("torch")
    tp = require("torch_pruning")
    import numpy as np

    from edgemed.models import Ensemble, StudentSpec, load_student, student_payload

    ckpt = student if isinstance(student, StudentCheckpoint) else StudentCheckpoint.load(student)
    net = load_student(ckpt)
    if isinstance(net, Ensemble):
        raise ConfigError(f"{ckpt.path} is an ensemble; prune its members before pooling them.")
    spec = StudentSpec.from_json({k: v for k, v in ckpt.architecture.items() if k != "pruned"})
    size = max(32, int(getattr(net, "stride", 16)) * 4)
    example = torch.randn(1, spec.in_channels, size, size)
    head = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    importance = {
        "magnitude": lambda: tp.importance.MagnitudeImportance(p=2),
        "bn_scale": lambda: tp.importance.BNScaleImportance(),
        "taylor": lambda: tp.importance.TaylorImportance(),
    }[config.importance]()
    base_macs, base_params = tp.utils.count_ops_and_params(net, example)
    batches = [torch.from_numpy(np.asarray(b, dtype=np.float32)) for b in example_batches] if example_batches \
        else [torch.rand(4, spec.in_channels, size, size, generator=torch.Generator().manual_seed(0))]
    with concat_sizes_from_tensors():
        pruner = tp.pruner.MetaPruner(net, example, importance=importance, pruning_ratio=config.ratio,
                                      iterative_steps=config.iterative_steps, ignored_layers=[head],
                                      round_to=config.round_to)
        for _ in range(config.iterative_steps):
            if config.importance == "taylor":
                net.zero_grad()
                for b in batches:
                    net(b).pow(2).mean().backward()
            pruner.step()
    net.zero_grad(set_to_none=True)
    net.eval()
    macs, params = tp.utils.count_ops_and_params(net, example)
    payload = student_payload(net, spec)
    arch = json.loads(payload["architecture.json"])
    arch["pruned"] = True
    payload["architecture.json"] = (json.dumps(arch, indent=2) + "\n").encode()
    payload["history.json"] = b"[]\n"
    metadata = dict(ckpt.metadata)
    metadata["pruning"] = {
        "config": asdict(config), "tool": f"torch-pruning {getattr(tp, '__version__', '?')}",
        "parameters": [int(base_params), int(params)],
        "macs_at": [int(base_macs), int(macs), list(example.shape)],
        "fine_tuned": False,
    }
    metadata["training"] = {**dict(metadata.get("training", {})), "parameters": int(params)}
    write_artifact(out, kind=STUDENT_KIND, schema_version=ckpt.manifest.schema_version, payload=payload,
                   metadata=metadata, parent=ckpt.manifest.digest)
    return StudentCheckpoint.load(out)
