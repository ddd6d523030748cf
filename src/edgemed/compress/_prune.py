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
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from edgemed._deps import require
from edgemed.artifacts import STUDENT_KIND, StudentCheckpoint, write_artifact
from edgemed.errors import ConfigError

__all__ = ["PruneConfig", "PruneResult", "attention_modules", "concat_sizes_from_tensors", "head_inputs",
           "no_inplace_ops", "output_head", "prune", "prune_module_"]

_IMPORTANCE = ("magnitude", "bn_scale", "taylor")


@dataclass(frozen=True, slots=True, kw_only=True)
class PruneConfig:
    """Channel pruning of a student (or any 2D segmentation network).

    Say how much to remove in exactly one way:

    Attributes:
        ratio: Share of channels removed from every prunable layer (0.5 halves them; FLOPs drop
            to about a quarter, as both a conv's inputs and outputs shrink). Default 0.5 when no
            target is given.
        target_macs: Instead of a ratio: prune in small steps until the network needs at most
            this share of its unpruned multiply-accumulates (0.25 = a quarter).
        target_latency_ms: Instead of a ratio: prune in small steps until one slice of
            `latency_size` x `latency_size` runs within this many milliseconds on this host in
            ONNX Runtime (the deployment runtime; measured, median of repeats).
        latency_size: Slice edge (pixels) for `target_latency_ms`.
        importance: "magnitude" (L2 norm of each channel's weights), "bn_scale" (|gamma| of the
            following BatchNorm) or "taylor" (|weight x gradient| on calibration batches).
        iterative_steps: Prune in this many equal steps (importance re-measured between steps);
            with a target, the number of steps up to the largest ratio (`max_ratio`).
        max_ratio: With a target, the largest channel share that may be removed.
        round_to: Keep channel counts multiples of this (SIMD / tensor-core friendly).
        keep_head_inputs: Leave the layers that feed the output head unpruned. The last decoder
            layer is the narrowest one (16 channels for up to a handful of classes in the zoo's
            U-Nets); pruning it took a joint 4-organ student's spleen to Dice 0 for good, where
            keeping it let a 30 %-pruned student recover 0.96 (README "Pruning").
    """

    ratio: float | None = None
    target_macs: float | None = None
    target_latency_ms: float | None = None
    latency_size: int = 256
    importance: str = "magnitude"
    iterative_steps: int = 1
    max_ratio: float = 0.9
    round_to: int = 4
    keep_head_inputs: bool = True

    def __post_init__(self) -> None:
        given = [n for n in ("ratio", "target_macs", "target_latency_ms") if getattr(self, n) is not None]
        if not given:
            object.__setattr__(self, "ratio", 0.5)
        elif len(given) > 1:
            raise ConfigError("give exactly one of ratio, target_macs or target_latency_ms "
                              f"(got {' and '.join(given)}).")
        if self.ratio is not None and not 0.0 < self.ratio < 0.95:
            raise ConfigError(f"ratio={self.ratio} must be in (0, 0.95); 0.5 removes half the channels.")
        if self.target_macs is not None and not 0.0 < self.target_macs < 1.0:
            raise ConfigError(f"target_macs={self.target_macs} is a share of the unpruned MACs, in (0, 1); "
                              "0.25 keeps a quarter.")
        if self.target_latency_ms is not None and self.target_latency_ms <= 0:
            raise ConfigError(f"target_latency_ms={self.target_latency_ms} must be > 0.")
        if self.importance not in _IMPORTANCE:
            raise ConfigError(f"importance={self.importance!r}; use one of {', '.join(_IMPORTANCE)}.")
        if self.iterative_steps < 1 or self.round_to < 1 or self.latency_size < 16:
            raise ConfigError("iterative_steps and round_to must be >= 1, latency_size >= 16.")
        if not 0.0 < self.max_ratio < 0.95:
            raise ConfigError(f"max_ratio={self.max_ratio} must be in (0, 0.95).")


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


@contextlib.contextmanager
def no_inplace_ops(net: Any) -> Iterator[None]:
    """Turn off `inplace=True` on every module of `net` while the dependency graph is traced.

    MONAI builds its activations (and dropout) in place. An in-place op after a norm layer
    replaces the autograd node torch-pruning recorded for that norm's output, so the norm drops
    out of the dependency graph: its conv is pruned, the norm is not, and the pruned network
    fails with a channel mismatch (BasicUNet's InstanceNorm, for one). Out-of-place tracing
    gives the same graph with every layer in it; the flags are restored afterwards.
    """
    flipped = [m for m in net.modules() if getattr(m, "inplace", None) is True]
    for m in flipped:
        m.inplace = False
    try:
        yield
    finally:
        for m in flipped:
            m.inplace = True


def attention_modules(net: Any) -> list[Any]:
    """The attention blocks of `net`, which pruning leaves whole.

    A window/self-attention splits its qkv projection into heads with a reshape by a stored
    `num_heads`; torch-pruning cannot see that split (SwinUNETR: "index out of bounds") and
    removing channels would also need the relative-position tables re-sliced per head. Kept
    whole, the token width they share stays as is, while the MLPs beside them (hidden width)
    and every conv of the encoder and decoder are pruned.
    """
    torch = require("torch")
    return [m for m in net.modules()
            if isinstance(m, torch.nn.MultiheadAttention) or isinstance(getattr(m, "qkv", None), torch.nn.Linear)]


def output_head(net: Any) -> Any:
    """The last convolution of `net`: its output channels are the classes, never pruned."""
    torch = require("torch")
    convs = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose2d,
                                                        torch.nn.ConvTranspose3d))]
    if not convs:
        raise ConfigError(f"{type(net).__name__} has no convolution; edgemed prunes convolutional networks.")
    return convs[-1]


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What `prune_module_` did: sizes before and after, and the ratio it stopped at."""

    macs: tuple[int, int]
    parameters: tuple[int, int]
    ratio: float
    steps: int
    latency_ms: tuple[float, float] | None = None


def prune_module_(net: Any, example: Any, config: PruneConfig, *, ignored_layers: Sequence[Any] = (),
                  batches: Sequence[Any] = (), progress: bool = False) -> PruneResult:
    """Remove channels from a torch network in place (DepGraph), keeping its output head and attention.

    Works on the zoo's students and on common teacher architectures (MONAI UNet, BasicUNet,
    SwinUNETR; nnU-Net's PlainConvUNet): MONAI's concatenated skips, in-place activations and
    attention blocks are handled (`concat_sizes_from_tensors`, `no_inplace_ops`,
    `attention_modules`).

    Args:
        net: The network; pruned in place.
        example: An input tensor the network accepts (traced once).
        config: How much to prune (a ratio, or a MACs or latency target) and by which importance.
        ignored_layers: More modules to leave unpruned.
        batches: For "taylor" importance: input tensors whose loss gradient ranks the channels.
        progress: Show a progress bar over the pruning steps.

    Raises:
        ConfigError: The target cannot be met within `config.max_ratio`.
    """
    torch = require("torch")
    tp = require("torch_pruning")

    from edgemed.compress._progress import progress_bar

    net.eval()
    head = output_head(net)
    ignored = [head, *attention_modules(net), *ignored_layers]
    importance = {
        "magnitude": lambda: tp.importance.MagnitudeImportance(p=2),
        "bn_scale": lambda: tp.importance.BNScaleImportance(),
        "taylor": lambda: tp.importance.TaylorImportance(),
    }[config.importance]()
    batches = list(batches) or [torch.rand(4, *example.shape[1:], generator=torch.Generator().manual_seed(0))]
    base_macs, base_params = tp.utils.count_ops_and_params(net, example)
    measure = _latency_probe(torch, example, config) if config.target_latency_ms is not None else None
    base_latency = measure(net) if measure else None
    ratio = config.ratio if config.ratio is not None else config.max_ratio
    steps = config.iterative_steps if config.ratio is not None else max(config.iterative_steps,
                                                                          round(config.max_ratio / 0.05))
    with concat_sizes_from_tensors(), no_inplace_ops(net), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*unwrapped parameters.*")
        warnings.filterwarnings("ignore", message=".*last non-singleton dimension.*")
        warnings.filterwarnings("ignore", message=".*does not match num_features.*")  # fixed below
        if config.keep_head_inputs:
            ignored += head_inputs(tp, net, example, head)
        pruner = tp.pruner.MetaPruner(net, example, importance=importance, pruning_ratio=ratio,
                                      iterative_steps=steps, ignored_layers=ignored, round_to=config.round_to)
        done, latency, macs = 0, base_latency, base_macs
        bar = progress_bar(range(steps), progress, desc="prune", unit="step")
        for _ in bar:
            if config.importance == "taylor":
                net.zero_grad()
                for b in batches:
                    net(b).float().pow(2).mean().backward()
            pruner.step()
            done += 1
            macs, _ = tp.utils.count_ops_and_params(net, example)
            if config.target_macs is not None:
                bar.set_postfix(macs=f"{macs / base_macs:.2f}")
                if macs <= config.target_macs * base_macs:
                    break
            if measure is not None:
                latency = measure(net)
                bar.set_postfix(ms=f"{latency:.1f}")
                if latency <= config.target_latency_ms:
                    break
        else:
            if config.target_macs is not None:
                raise ConfigError(f"target_macs={config.target_macs} not reached: removing {config.max_ratio:.0%} "
                                  f"of channels leaves {macs / base_macs:.1%} of the MACs. Raise max_ratio or "
                                  "aim higher.")
            if measure is not None:
                raise ConfigError(f"target_latency_ms={config.target_latency_ms} not reached: removing "
                                  f"{config.max_ratio:.0%} of channels gives {latency:.1f} ms on this host "
                                  f"(unpruned {base_latency:.1f} ms). Aim higher, or add INT8 "
                                  "(edgemed quantize).")
    net.zero_grad(set_to_none=True)
    net.eval()
    _sync_stateless_norms(torch, net, example)
    macs, params = tp.utils.count_ops_and_params(net, example)
    return PruneResult(macs=(int(base_macs), int(macs)), parameters=(int(base_params), int(params)),
                       ratio=round(ratio * done / steps, 4), steps=done,
                       latency_ms=None if measure is None else (round(base_latency, 3), round(latency, 3)))


def head_inputs(tp: Any, net: Any, example: Any, head: Any) -> list[Any]:
    """The layers whose output channels are `head`'s input channels (found by the dependency graph,
    so a residual sum or a concatenation in front of the head is followed)."""
    torch = require("torch")
    graph = tp.DependencyGraph().build_dependency(net, example_inputs=example)
    group = graph.get_pruning_group(head, tp.prune_conv_in_channels, idxs=[0])
    layers = (torch.nn.Conv2d, torch.nn.Conv3d, torch.nn.ConvTranspose2d, torch.nn.ConvTranspose3d, torch.nn.Linear)
    found: list[Any] = []
    for item in group:
        module = item.dep.target.module
        if module is not head and isinstance(module, layers) and module not in found:
            found.append(module)
    return found


def _sync_stateless_norms(torch: Any, net: Any, example: Any) -> None:
    """Set `num_features` of parameter-free InstanceNorms to the channels they now receive.

    An InstanceNorm without affine parameters or running stats holds no tensor to prune, so
    torch-pruning may leave its `num_features` at the old count; the output is unaffected, but
    torch warns on every call. One forward pass reads the true counts.
    """
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.instancenorm._InstanceNorm)
             and not m.affine and not m.track_running_stats]
    seen: dict[Any, int] = {}

    def record(module: Any, args: tuple[Any, ...]) -> None:
        seen.setdefault(module, int(args[0].shape[1]))

    hooks = [m.register_forward_pre_hook(record) for m in norms]
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            net(example)
    finally:
        for h in hooks:
            h.remove()
    for m, channels in seen.items():
        m.num_features = channels


def _latency_probe(torch: Any, example: Any, config: PruneConfig) -> Callable[[Any], float]:
    """Median ONNX Runtime latency (ms) of one slice through the network as it is now.

    Timed through the runtime's own ONNX Runtime session (its thread count and options), as the
    pruned student will run once deployed.
    """
    import tempfile
    from pathlib import Path

    import numpy as np

    from edgemed.measure import time_interleaved
    from edgemed.runtime.backends import open_session

    x = torch.rand(1, example.shape[1], config.latency_size, config.latency_size)

    def measure(net: Any) -> float:
        with tempfile.TemporaryDirectory(prefix="edgemed-prune-") as tmp:
            path = Path(tmp) / "probe.onnx"
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
                torch.onnx.export(net, (x,), str(path), opset_version=17, input_names=["x"], dynamo=False)
            with open_session("ort", path) as session:
                times = time_interleaved({"probe": session}, {"x": x.numpy()}, 15, warmup=3)["probe"]
        return float(np.median(times))

    return measure


def prune(student: StudentCheckpoint | str | os.PathLike[str], config: PruneConfig,
          out: str | os.PathLike[str], *, example_batches: Any = None, progress: bool = False,
          overwrite: bool = False) -> StudentCheckpoint:
    """Remove channels from a student (the output head is never pruned) and write a new checkpoint.

    The pruned student has not been fine-tuned: distill it again from the unpruned one
    (`distill(..., teacher=StudentTeacher(unpruned), init=pruned)`) to recover accuracy.

    Args:
        student: The student checkpoint (or its directory).
        config: A ratio, or a MACs or latency target, and the importance criterion.
        out: The checkpoint directory to write.
        example_batches: For "taylor": a list of (N, C, H, W) float arrays (real slices) whose
            loss gradient (mean logit energy) ranks channels; default: random input.
        progress: Show a progress bar over the pruning steps.
        overwrite: Replace a student checkpoint at `out` (anything else there is refused).

    Returns:
        The pruned checkpoint; its manifest records parameters and MACs before and after, and the
        ratio and latency reached.
    """
    from edgemed.artifacts import check_output

    check_output(out, kind=STUDENT_KIND, overwrite=overwrite,
                 inputs=[student.path if isinstance(student, StudentCheckpoint) else student])
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
    batches = [torch.from_numpy(np.asarray(b, dtype=np.float32)) for b in example_batches or ()]
    result = prune_module_(net, example, config, batches=batches, progress=progress)
    payload = student_payload(net, spec)
    arch = json.loads(payload["architecture.json"])
    arch["pruned"] = True
    payload["architecture.json"] = (json.dumps(arch, indent=2) + "\n").encode()
    payload["history.json"] = b"[]\n"
    pruning = {
        "config": asdict(config), "tool": f"torch-pruning {getattr(tp, '__version__', '?')}",
        "parameters": list(result.parameters),
        "macs_at": [*result.macs, list(example.shape)],
        "ratio_reached": result.ratio, "steps": result.steps,
        "latency_ms_onnxruntime": None if result.latency_ms is None else list(result.latency_ms),
        "fine_tuned": False,
    }
    metadata = ckpt.meta.with_(pruning=pruning, training=ckpt.meta.training.with_(parameters=result.parameters[1]))
    if metadata.qc is not None:
        # The QC reference describes the parent's behaviour; a fine-tune (distill with init=) measures its own.
        metadata = metadata.with_(qc=metadata.qc.with_(extra={**metadata.qc.extra, "measured_on": (
            f"the unpruned parent {ckpt.manifest.digest[:12]}; fine-tune (which recalibrates) or run "
            "edgemed.compress.calibrate_qc on this student")}))
    write_artifact(out, kind=STUDENT_KIND, schema_version=ckpt.manifest.schema_version, payload=payload,
                   metadata=metadata.to_json(), parent=ckpt.manifest.digest, overwrite=overwrite)
    return StudentCheckpoint.load(out)
