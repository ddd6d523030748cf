"""Rebuild a torch student from a StudentCheckpoint, and turn a module into checkpoint payload."""

from __future__ import annotations

import json

import numpy as np
import torch
from torch import nn

from edgemed.artifacts import StudentCheckpoint
from edgemed.errors import ArtifactError
from edgemed.models._zoo import StudentSpec, create_student

__all__ = ["load_student", "student_payload"]


def load_student(checkpoint: StudentCheckpoint) -> nn.Module:
    """The student network of `checkpoint`, weights loaded, in eval mode.

    Example:
        >>> net = load_student(StudentCheckpoint.load("runs/liver"))
    """
    spec = StudentSpec.from_json(checkpoint.architecture)
    net = create_student(spec)
    state = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in checkpoint.state_dict_numpy().items()}
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
