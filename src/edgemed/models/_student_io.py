"""Rebuild a torch student from a StudentCheckpoint, and turn a module into checkpoint payload."""

from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn

from edgemed.artifacts import StudentCheckpoint
from edgemed.errors import ArtifactError
from edgemed.models._zoo import StudentSpec, create_student

__all__ = ["load_student", "resize_to_state", "student_payload"]


def load_student(checkpoint: StudentCheckpoint) -> nn.Module:
    """The student network of `checkpoint`, weights loaded, in eval mode.

    Example:
        >>> net = load_student(StudentCheckpoint.load("runs/liver"))
    """
    arch = checkpoint.architecture
    spec = StudentSpec.from_json(arch)
    net = create_student(spec)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in checkpoint.state_dict_numpy().items()}
    if arch.get("pruned"):
        resize_to_state(net, state)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ArtifactError(
            f"{checkpoint.path}: weights do not fit architecture {spec.arch} ({err}). "
            "The checkpoint is damaged or from an incompatible edgemed; re-create it."
        ) from err
    return net.eval()


def student_payload(net: nn.Module, spec: StudentSpec) -> dict[str, bytes]:
    """weights.safetensors and architecture.json for `net` (no pickle)."""
    from safetensors.torch import save

    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    return {
        "weights.safetensors": save(state),
        "architecture.json": (json.dumps(spec.to_json(), indent=2) + "\n").encode(),
    }


def resize_to_state(net: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
    """Resize every Conv2d, ConvTranspose2d and BatchNorm2d of `net` in place to the shapes in `state`.

    How a channel-pruned student is rebuilt without pickle: its zoo architecture, with each layer
    as wide as its stored weights. Depthwise convolutions stay depthwise.
    """
    for name, module in list(net.named_modules()):
        key = f"{name}.weight" if name else "weight"
        if key not in state:
            continue
        shape = tuple(state[key].shape)
        if isinstance(module, nn.Conv2d) and not isinstance(module, nn.ConvTranspose2d):
            out_c, per_group = shape[0], shape[1]
            depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
            groups = out_c if depthwise else module.groups
            new: nn.Module = nn.Conv2d(per_group * groups, out_c, module.kernel_size, module.stride, module.padding,
                                       module.dilation, groups, module.bias is not None, module.padding_mode)
        elif isinstance(module, nn.ConvTranspose2d):
            new = nn.ConvTranspose2d(shape[0], shape[1] * module.groups, module.kernel_size, module.stride,
                                     module.padding, module.output_padding, module.groups, module.bias is not None,
                                     module.dilation)
        elif isinstance(module, nn.BatchNorm2d):
            new = nn.BatchNorm2d(shape[0], module.eps, module.momentum, module.affine, module.track_running_stats)
        else:
            continue
        if tuple(new.weight.shape) == tuple(module.weight.shape):
            continue
        parent = net.get_submodule(name.rsplit(".", 1)[0]) if "." in name else net
        setattr(parent, name.rsplit(".", 1)[-1], new)
    return net
